#include "io/tensorboard.hpp"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <system_error>

#include <spdlog/spdlog.h>

#include "tensorboard_event.pb-c.h"

namespace lyre {
namespace {

// TensorBoard recognises an event file by this version string in its first record.
constexpr const char* kFileVersion = "brain.Event:2";
constexpr size_t kHeaderBytes = 12;  // uint64 length + uint32 masked CRC of the length
constexpr size_t kFooterBytes = 4;   // uint32 masked CRC of the data

// Keeps two writers that start in the same second in one process (a run and its eval writer, or
// a test) from picking the same file name.
std::atomic<unsigned> g_file_counter{0};

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

void put_le(unsigned char* out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out[i] = static_cast<unsigned char>(value >> (8 * i));
}

uint64_t get_le(const unsigned char* in, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= uint64_t{in[i]} << (8 * i);
  return value;
}

// proto3 strings must be UTF-8: TensorBoard's parser drops a record whose tag is not, so a bad
// tag is refused here, where the caller can still be named.
bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t extra;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i <= extra) return false;
    for (size_t k = 1; k <= extra; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMinimum[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMinimum[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += extra + 1;
  }
  return true;
}

// For an error message about a tag that is not text: bytes outside printable ASCII as \xNN.
std::string escaped(const std::string& s) {
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
      out += ch;
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += {'\\', 'x', kHex[c >> 4], kHex[c & 15]};
    }
  }
  return out;
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error(dir + ": cannot create the TensorBoard directory: " + ec.message());

  const auto seconds = static_cast<long long>(now_seconds());
  path_ = (std::filesystem::path(dir) / ("events.out.tfevents." + std::to_string(seconds) + "." + host_name() +
                                         "." + std::to_string(::getpid()) + "." +
                                         std::to_string(g_file_counter.fetch_add(1))))
              .string();
  // "x": never truncate another run's file that happens to bear the same name.
  file_ = std::fopen(path_.c_str(), "wbx");
  if (file_ == nullptr) {
    throw std::runtime_error(path_ + ": cannot create the TensorBoard event file: " + std::strerror(errno));
  }
  // A log line is a few records of ~50 bytes; one write(2) per flush() is enough.
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 16);
  Lyre__Tensorboard__Event event = LYRE__TENSORBOARD__EVENT__INIT;
  event.wall_time = now_seconds();
  event.what_case = LYRE__TENSORBOARD__EVENT__WHAT_FILE_VERSION;
  std::string version = kFileVersion;
  event.file_version = version.data();
  write_event(event);
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ == nullptr) return;
  // A destructor cannot throw; losing the tail of a log is worth a warning, not a crash.
  if (std::fclose(file_) != 0) spdlog::warn("{}: closing the TensorBoard event file failed: {}", path_, std::strerror(errno));
}

void TensorBoardWriter::scalar(const std::string& tag, int64_t step, double value, double wall_time) {
  if (!valid_utf8(tag)) {
    throw std::runtime_error(path_ + ": TensorBoard tag \"" + escaped(tag) + "\" is not valid UTF-8");
  }
  std::string tag_text = tag;  // protobuf-c takes char*
  Lyre__Tensorboard__Summary__Value entry = LYRE__TENSORBOARD__SUMMARY__VALUE__INIT;
  entry.tag = tag_text.data();
  entry.value_case = LYRE__TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
  // NaN and infinities are kept (TensorBoard draws them); a finite double beyond float range
  // becomes an infinity, as in TensorFlow's own writers.
  entry.simple_value = static_cast<float>(value);
  Lyre__Tensorboard__Summary__Value* entries[] = {&entry};
  Lyre__Tensorboard__Summary summary = LYRE__TENSORBOARD__SUMMARY__INIT;
  summary.n_value = 1;
  summary.value = entries;
  Lyre__Tensorboard__Event event = LYRE__TENSORBOARD__EVENT__INIT;
  event.wall_time = wall_time < 0 ? now_seconds() : wall_time;
  event.step = step;
  event.what_case = LYRE__TENSORBOARD__EVENT__WHAT_SUMMARY;
  event.summary = &summary;
  write_event(event);
}

void TensorBoardWriter::write_event(const Lyre__Tensorboard__Event& event) {
  std::string payload(lyre__tensorboard__event__get_packed_size(&event), '\0');
  lyre__tensorboard__event__pack(&event, reinterpret_cast<uint8_t*>(payload.data()));
  write_record(payload);
}

void TensorBoardWriter::flush() {
  if (std::fflush(file_) != 0) throw std::runtime_error(path_ + ": cannot write the TensorBoard event file: " + std::strerror(errno));
}

void TensorBoardWriter::write_record(const std::string& payload) {
  unsigned char header[kHeaderBytes];
  put_le(header, payload.size(), 8);
  put_le(header + 8, masked_crc32c(header, 8), 4);
  unsigned char footer[kFooterBytes];
  put_le(footer, masked_crc32c(payload.data(), payload.size()), 4);
  if (std::fwrite(header, 1, sizeof header, file_) != sizeof header ||
      std::fwrite(payload.data(), 1, payload.size(), file_) != payload.size() ||
      std::fwrite(footer, 1, sizeof footer, file_) != sizeof footer) {
    throw std::runtime_error(path_ + ": cannot write the TensorBoard event file: " + std::strerror(errno));
  }
}

std::vector<ScalarEvent> read_tensorboard_scalars(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) throw std::runtime_error(path + ": cannot open the TensorBoard event file: " + std::strerror(errno));
  std::string bytes;
  char chunk[1 << 16];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof chunk, file)) > 0) bytes.append(chunk, got);
  const bool failed = std::ferror(file) != 0;
  const int error = errno;
  std::fclose(file);
  if (failed) throw std::runtime_error(path + ": cannot read the TensorBoard event file: " + std::strerror(error));

  std::vector<ScalarEvent> scalars;
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t offset = 0;
  while (offset < bytes.size()) {
    auto fail = [&](const std::string& what) {
      throw std::runtime_error(path + ": record at byte " + std::to_string(offset) + ": " + what);
    };
    const size_t left = bytes.size() - offset;
    if (left < kHeaderBytes) {
      fail("truncated record (" + std::to_string(left) + " bytes left, a record header is " +
           std::to_string(kHeaderBytes) + ")");
    }
    const unsigned char* record = data + offset;
    if (get_le(record + 8, 4) != masked_crc32c(record, 8)) fail("length CRC mismatch");
    const uint64_t length = get_le(record, 8);
    const size_t body = left - kHeaderBytes;
    if (body < kFooterBytes || length > body - kFooterBytes) {
      fail("truncated record (" + std::to_string(length) + " bytes of data and a 4-byte CRC announced, " +
           std::to_string(body) + " bytes left)");
    }
    const unsigned char* payload = record + kHeaderBytes;
    if (get_le(payload + length, 4) != masked_crc32c(payload, length)) fail("data CRC mismatch");
    std::unique_ptr<Lyre__Tensorboard__Event, void (*)(Lyre__Tensorboard__Event*)> event(
        lyre__tensorboard__event__unpack(nullptr, length, payload),
        [](Lyre__Tensorboard__Event* e) { lyre__tensorboard__event__free_unpacked(e, nullptr); });
    if (event == nullptr) fail("not an Event protobuf");
    if (event->what_case == LYRE__TENSORBOARD__EVENT__WHAT_SUMMARY && event->summary != nullptr) {
      // Values of other kinds (images, histograms, tensors) are not scalars; they are skipped.
      for (size_t i = 0; i < event->summary->n_value; ++i) {
        const Lyre__Tensorboard__Summary__Value* entry = event->summary->value[i];
        if (entry->value_case != LYRE__TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE) continue;
        scalars.push_back(ScalarEvent{entry->tag, event->step, entry->simple_value, event->wall_time});
      }
    }
    offset += kHeaderBytes + length + kFooterBytes;
  }
  return scalars;
}

}  // namespace lyre
