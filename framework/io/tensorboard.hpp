// TensorBoard event files. `tensorboard_dir` gets one file per run,
// events.out.tfevents.<unix seconds>.<hostname>.<pid>.<counter>, which TensorBoard reads as a
// run. The file is a sequence of TFRecord records:
//   uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes |
//   `length` bytes: an Event protobuf | uint32 masked CRC32C of those bytes
// where masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8. The first event carries
// file_version "brain.Event:2"; each scalar is an Event{wall_time, step, summary{value{tag,
// simple_value}}}. The messages come from io/proto/tensorboard_event.proto (field numbers as
// TensorBoard's own event.proto and summary.proto), compiled by protoc to C (protobuf-c).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

struct Lyre__Tensorboard__Event;  // protobuf-c's generated message (tensorboard_event.pb-c.h)

namespace lyre {

// CRC-32C (Castagnoli), the checksum TFRecord uses; crc32c("123456789") == 0xe3069283.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);
uint32_t masked_crc32c(const void* data, size_t size);

class TensorBoardWriter {
 public:
  // Creates `dir` (and parents) and a new event file in it, and writes the file_version event.
  // Errors (std::runtime_error) name the directory or file and the system's reason.
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();  // flushes
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One scalar at `step`, stored as float32 (simple_value), as TensorBoard's own writers do.
  // wall_time < 0: now.
  void scalar(const std::string& tag, int64_t step, double value, double wall_time = -1);
  // Hands buffered records to the OS, so that a running TensorBoard sees them. The Trainer calls
  // it after each log line.
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_event(const Lyre__Tensorboard__Event& event);
  void write_record(const std::string& payload);
  std::string path_;
  std::FILE* file_ = nullptr;
};

// What a reader gets back from an event file: every scalar in file order.
struct ScalarEvent {
  std::string tag;
  int64_t step = 0;
  float value = 0;
  double wall_time = 0;
};

// Reads an event file, checking both CRCs of every record and parsing each Event. Errors
// (std::runtime_error) name the file and the byte offset of the bad record ("truncated record",
// "length CRC mismatch", "data CRC mismatch", "not an Event protobuf").
std::vector<ScalarEvent> read_tensorboard_scalars(const std::string& path);

}  // namespace lyre
