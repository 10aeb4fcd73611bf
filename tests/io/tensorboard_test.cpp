// TensorBoard event files: CRC-32C against known answers, and what the writer puts on disk read back
// three ways: lyre's reader, protoc decoding each record (with lyre's schema and with none), and
// tfevents_reference.py, a Python reader that shares no code with lyre.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/tensorboard.hpp"

namespace fs = std::filesystem;

namespace {

// The textbook one-bit-at-a-time CRC-32C, to check the table-driven one against.
uint32_t bitwise_crc32c(const unsigned char* p, size_t n) {
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1u) ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
  }
  return ~crc;
}

uint32_t bitwise_masked(const std::string& s) {
  const uint32_t c = bitwise_crc32c(reinterpret_cast<const unsigned char*>(s.data()), s.size());
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

uint32_t float_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

uint64_t double_bits(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, sizeof bits);
  return bits;
}

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(LYRE_BINARY_DIR) / "tests" / "io" / "tensorboard" / name;
  fs::remove_all(dir);
  return dir;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

uint64_t le(const std::string& bytes, size_t at, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t{static_cast<unsigned char>(bytes[at + i])} << (8 * i);
  return v;
}

struct Record {
  size_t offset;  // of its header in the file
  std::string payload;
};

// Splits an event file into records by the TFRecord framing, checking both CRCs with the bitwise
// reference, so that nothing of lyre's reader is trusted here.
std::vector<Record> split_records(const std::string& bytes) {
  std::vector<Record> records;
  size_t at = 0;
  while (at < bytes.size()) {
    REQUIRE(bytes.size() - at >= 16);
    const uint64_t length = le(bytes, at, 8);
    REQUIRE(le(bytes, at + 8, 4) == bitwise_masked(bytes.substr(at, 8)));
    REQUIRE(bytes.size() - at - 16 >= length);
    std::string payload = bytes.substr(at + 12, length);
    REQUIRE(le(bytes, at + 12 + length, 4) == bitwise_masked(payload));
    records.push_back({at, std::move(payload)});
    at += 16 + length;
  }
  return records;
}

std::string frame(const std::string& payload) {
  std::string out;
  auto put = [&](uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out += static_cast<char>(v >> (8 * i));
  };
  put(payload.size(), 8);
  put(bitwise_masked(out.substr(0, 8)), 4);
  out += payload;
  put(bitwise_masked(payload), 4);
  return out;
}

struct Run {
  int status;
  std::string output;  // stdout and stderr together
};

Run run(const std::string& command) {
  std::FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buf[4096];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, pipe)) > 0) output.append(buf, got);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

Run protoc_decode(const std::string& payload, const fs::path& scratch, bool raw) {
  spit(scratch.string(), payload);
  const std::string how = raw ? std::string("--decode_raw")
                              : std::string("--decode=lyre.tensorboard.Event --proto_path=") +
                                    quoted(LYRE_TENSORBOARD_PROTO_DIR) + " tensorboard_event.proto";
  return run(quoted(LYRE_PROTOC) + " " + how + " < " + quoted(scratch.string()));
}

Run python_reader(const std::string& path) {
  INFO("python3 found at configure time: " << LYRE_PYTHON3);
  REQUIRE(fs::exists(LYRE_PYTHON3));
  return run(quoted(LYRE_PYTHON3) + " " + quoted(std::string(LYRE_SOURCE_DIR) + "/tests/io/tfevents_reference.py") +
             " " + quoted(path));
}

std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

std::string read_error(const std::string& path) {
  try {
    lyre::read_tensorboard_scalars(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

struct Logged {
  std::string tag;
  int64_t step;
  double value;
  double wall_time;  // < 0: the writer's clock
};

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

// Signs, the extremes of float32, values float32 cannot hold, non-finite values, step 0 (which
// proto3 leaves out of the bytes) and a step that needs a long varint.
const std::vector<Logged> kMixed = {
    {"loss", 0, 2.5, 1700000000.25},
    {"loss", 1, -3.25, 1700000001.5},
    {"lr", 1, 3e-4, -1},
    {"eval/loss", 2, 0.0, 1700000002.0},
    {"tiny", 3, 1e-30, -1},
    {"tiny", 4, 1e-42, -1},  // subnormal in float32
    {"large", 5, 1e30, 1700000003.0},
    {"large", 6, 1e300, 1700000004.0},    // beyond float32: +inf
    {"large", 7, -1e300, 1700000005.0},   // -inf
    {"nonfinite", 8, kNaN, 1700000006.0},
    {"nonfinite", 9, kInf, 1700000007.0},
    {"nonfinite", 10, -kInf, 1700000008.0},
    {"Verlust/gr\xc3\xb6\xc3\x9f" "e", int64_t{1} << 40, 0.1, 1700000009.0},
};

std::string write_mixed(const fs::path& dir) {
  lyre::TensorBoardWriter writer(dir.string());
  for (const auto& l : kMixed) writer.scalar(l.tag, l.step, l.value, l.wall_time);
  return writer.path();
}

}  // namespace

TEST_CASE("crc32c gives the standard check values and agrees with a bitwise reference", "[io][tensorboard]") {
  // "123456789" is the catalogue check value; the 32-byte vectors are RFC 3720's (B.4).
  CHECK(lyre::crc32c("123456789", 9) == 0xe3069283u);
  CHECK(lyre::crc32c("", 0) == 0u);
  const std::string zeros(32, '\0'), ones(32, '\xff');
  std::string up, down;
  for (int i = 0; i < 32; ++i) {
    up += static_cast<char>(i);
    down += static_cast<char>(31 - i);
  }
  CHECK(lyre::crc32c(zeros.data(), zeros.size()) == 0x8a9136aau);
  CHECK(lyre::crc32c(ones.data(), ones.size()) == 0x62a8ab43u);
  CHECK(lyre::crc32c(up.data(), up.size()) == 0x46dd794eu);
  CHECK(lyre::crc32c(down.data(), down.size()) == 0x113fdb5cu);
  // Masked values as tfevents_reference.py computes them.
  CHECK(lyre::masked_crc32c("", 0) == 0xa282ead8u);
  CHECK(lyre::masked_crc32c("123456789", 9) == 0xc78ab0e5u);

  std::mt19937 rng(42);
  for (size_t n = 0; n < 300; n += 7) {
    std::string bytes(n, '\0');
    for (auto& b : bytes) b = static_cast<char>(rng());
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    INFO("length " << n);
    REQUIRE(lyre::crc32c(p, n) == bitwise_crc32c(p, n));
    REQUIRE(lyre::masked_crc32c(p, n) == bitwise_masked(bytes));
    const size_t cut = n / 3;
    REQUIRE(lyre::crc32c(p + cut, n - cut, lyre::crc32c(p, cut)) == bitwise_crc32c(p, n));
  }
}

TEST_CASE("logged scalars read back as the float32 of each value, in order", "[io][tensorboard]") {
  const double before = now_seconds();
  const std::string path = write_mixed(fresh_dir("read_back"));
  const double after = now_seconds();

  const auto read = lyre::read_tensorboard_scalars(path);
  REQUIRE(read.size() == kMixed.size());
  for (size_t i = 0; i < read.size(); ++i) {
    INFO("scalar " << i << " (" << kMixed[i].tag << ")");
    CHECK(read[i].tag == kMixed[i].tag);
    CHECK(read[i].step == kMixed[i].step);
    CHECK(float_bits(read[i].value) == float_bits(static_cast<float>(kMixed[i].value)));
    if (kMixed[i].wall_time >= 0) {
      CHECK(read[i].wall_time == kMixed[i].wall_time);
    } else {
      CHECK(read[i].wall_time >= before);
      CHECK(read[i].wall_time <= after);
    }
  }
  // The choices the comments promise: doubles beyond float32 saturate to infinities, non-finite
  // values are stored as they are, and a float32 subnormal is not flushed to zero.
  CHECK(read[7].value == std::numeric_limits<float>::infinity());
  CHECK(read[8].value == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(read[9].value));
  CHECK(read[5].value > 0.0f);
}

TEST_CASE("an event file is named as TensorBoard expects and opens with the brain.Event:2 record",
          "[io][tensorboard]") {
  const fs::path dir = fresh_dir("file_version") / "nested" / "run";  // parents are created
  const double before = std::floor(now_seconds());
  std::string path;
  {
    lyre::TensorBoardWriter writer(dir.string());
    path = writer.path();
  }
  const double after = now_seconds();

  char host[256] = {};
  REQUIRE(::gethostname(host, sizeof host - 1) == 0);
  CHECK(fs::path(path).parent_path() == dir);
  const std::string name = fs::path(path).filename().string();
  const std::string prefix = "events.out.tfevents.";
  const std::string suffix = "." + std::string(host) + "." + std::to_string(::getpid()) + ".";
  INFO(name);
  REQUIRE(name.compare(0, prefix.size(), prefix) == 0);
  const size_t at = name.find(suffix, prefix.size());
  REQUIRE(at != std::string::npos);
  const double seconds = std::stod(name.substr(prefix.size(), at - prefix.size()));
  CHECK(seconds >= before);
  CHECK(seconds <= after);
  CHECK(std::regex_match(name.substr(at + suffix.size()), std::regex("[0-9]+")));

  const auto records = split_records(slurp(path));
  REQUIRE(records.size() == 1);
  const Run decoded = protoc_decode(records[0].payload, dir / "payload.bin", /*raw=*/false);
  INFO(decoded.output);
  REQUIRE(decoded.status == 0);
  std::smatch m;
  REQUIRE(std::regex_search(decoded.output, m, std::regex("wall_time: ([0-9.e+]+)")));
  CHECK(std::stod(m[1]) >= before);
  CHECK(std::stod(m[1]) <= after);
  CHECK(decoded.output.find("file_version: \"brain.Event:2\"") != std::string::npos);
  CHECK(decoded.output.find("step") == std::string::npos);
  CHECK(decoded.output.find("summary") == std::string::npos);
  CHECK(lyre::read_tensorboard_scalars(path).empty());
}

TEST_CASE("protoc decodes every record, with lyre's schema and with none", "[io][tensorboard]") {
  const fs::path dir = fresh_dir("protoc");
  const std::vector<Logged> logged = {
      {"loss", 0, 0.0, 1700000000.25}, {"loss", 7, 2.5, 1700000001.5}, {"lr", 7, -3e-4, 1700000002.75},
      {"nonfinite", 8, kNaN, 1700000003.0}, {"big/step", int64_t{1} << 40, 1e30, 1700000004.0}};
  std::string path;
  {
    lyre::TensorBoardWriter writer(dir.string());
    for (const auto& l : logged) writer.scalar(l.tag, l.step, l.value, l.wall_time);
    path = writer.path();
  }
  const auto records = split_records(slurp(path));
  REQUIRE(records.size() == logged.size() + 1);

  for (size_t i = 0; i < logged.size(); ++i) {
    const Logged& l = logged[i];
    const std::string& payload = records[i + 1].payload;
    INFO("scalar " << i << " (" << l.tag << ")");

    const Run decoded = protoc_decode(payload, dir / "payload.bin", /*raw=*/false);
    INFO(decoded.output);
    REQUIRE(decoded.status == 0);
    std::smatch m;
    REQUIRE(std::regex_search(decoded.output, m, std::regex("wall_time: (\\S+)")));
    CHECK(std::stod(m[1]) == l.wall_time);
    if (l.step == 0) {
      CHECK(decoded.output.find("step:") == std::string::npos);  // proto3 omits the default
    } else {
      REQUIRE(std::regex_search(decoded.output, m, std::regex("step: (\\S+)")));
      CHECK(std::stoll(m[1]) == l.step);
    }
    CHECK(decoded.output.find("summary {\n  value {\n    tag: \"" + l.tag + "\"\n") != std::string::npos);
    REQUIRE(std::regex_search(decoded.output, m, std::regex("simple_value: (\\S+)")));
    CHECK(float_bits(std::strtof(m[1].str().c_str(), nullptr)) == float_bits(static_cast<float>(l.value)));

    // Without a schema protoc prints field numbers and raw fixed-width bits: this pins
    // TensorBoard's numbering and wire types independently of tensorboard_event.proto.
    const Run raw = protoc_decode(payload, dir / "payload.bin", /*raw=*/true);
    REQUIRE(raw.status == 0);
    char expected[512];
    std::snprintf(expected, sizeof expected, "1: 0x%016llx\n%s5 {\n  1 {\n    1: \"%s\"\n    2: 0x%08x\n  }\n}\n",
                  static_cast<unsigned long long>(double_bits(l.wall_time)),
                  l.step == 0 ? "" : ("2: " + std::to_string(l.step) + "\n").c_str(), l.tag.c_str(),
                  float_bits(static_cast<float>(l.value)));
    CHECK(raw.output == expected);
  }
}

TEST_CASE("an independent Python reader sees the same records as lyre's reader", "[io][tensorboard]") {
  const std::string path = write_mixed(fresh_dir("python"));
  const auto lyre_read = lyre::read_tensorboard_scalars(path);
  REQUIRE(lyre_read.size() == kMixed.size());

  const Run py = python_reader(path);
  INFO(py.output);
  REQUIRE(py.status == 0);
  const auto lines = json_lines(py.output);
  REQUIRE(lines.size() == kMixed.size() + 1);
  CHECK(lines[0].at("file_version") == "brain.Event:2");
  for (size_t i = 0; i < kMixed.size(); ++i) {
    const auto& line = lines[i + 1];
    INFO("scalar " << i << ": " << line.dump());
    CHECK(line.at("tag").get<std::string>() == kMixed[i].tag);
    CHECK(line.at("step").get<int64_t>() == kMixed[i].step);
    CHECK(line.at("value_bits").get<uint32_t>() == float_bits(static_cast<float>(kMixed[i].value)));
    CHECK(line.at("value_bits").get<uint32_t>() == float_bits(lyre_read[i].value));
    CHECK(line.at("wall_time").get<double>() == lyre_read[i].wall_time);
  }
}

TEST_CASE("a flipped payload byte is rejected by both readers, naming the file and the record's offset",
          "[io][tensorboard]") {
  const fs::path dir = fresh_dir("flipped");
  const std::string path = write_mixed(dir);
  std::string bytes = slurp(path);
  const auto records = split_records(bytes);
  const size_t bad = records[3].offset;
  bytes[bad + 12 + 5] ^= 0x10;
  spit(path, bytes);

  const std::string expected = path + ": record at byte " + std::to_string(bad) + ": data CRC mismatch";
  CHECK(read_error(path) == expected);
  const Run py = python_reader(path);
  CHECK(py.status == 1);
  CHECK(py.output == expected + "\n");
}

TEST_CASE("damaged framing is reported by kind and offset", "[io][tensorboard]") {
  const fs::path dir = fresh_dir("framing");
  const std::string path = write_mixed(dir);
  const std::string good = slurp(path);
  const auto records = split_records(good);
  const Record& last = records.back();
  const std::string at_last = path + ": record at byte " + std::to_string(last.offset) + ": ";

  SECTION("a file cut inside its last record") {
    spit(path, good.substr(0, good.size() - 2));
    CHECK(read_error(path) == at_last + "truncated record (" + std::to_string(last.payload.size()) +
                                  " bytes of data and a 4-byte CRC announced, " +
                                  std::to_string(last.payload.size() + 2) + " bytes left)");
    CHECK(python_reader(path).output == at_last + "truncated record\n");
  }
  SECTION("a file cut inside a record header") {
    spit(path, good + std::string(5, '\0'));
    const std::string at_end = path + ": record at byte " + std::to_string(good.size()) + ": ";
    CHECK(read_error(path) == at_end + "truncated record (5 bytes left, a record header is 12)");
    CHECK(python_reader(path).output == at_end + "truncated record\n");
  }
  SECTION("a damaged length") {
    std::string bytes = good;
    bytes[last.offset + 1] ^= 0x01;
    spit(path, bytes);
    CHECK(read_error(path) == at_last + "length CRC mismatch");
    CHECK(python_reader(path).output == at_last + "length CRC mismatch\n");
  }
  SECTION("a record whose CRCs hold but whose data is not an Event") {
    // 0xff 0xff: a varint that runs off the end of the data.
    spit(path, good + frame("\xff\xff"));
    const std::string at_end = path + ": record at byte " + std::to_string(good.size()) + ": ";
    CHECK(read_error(path) == at_end + "not an Event protobuf");
    CHECK(python_reader(path).output == at_end + "not an Event protobuf\n");
  }
}

TEST_CASE("records wait in the writer's buffer until flush hands them to the file", "[io][tensorboard]") {
  lyre::TensorBoardWriter writer(fresh_dir("flush").string());
  writer.scalar("loss", 1, 1.5);
  writer.scalar("loss", 2, 1.25);
  CHECK(fs::file_size(writer.path()) == 0);
  writer.flush();
  const auto read = lyre::read_tensorboard_scalars(writer.path());
  REQUIRE(read.size() == 2);
  CHECK(read[1].value == 1.25f);
  writer.scalar("loss", 3, 1.0);
  writer.flush();
  CHECK(lyre::read_tensorboard_scalars(writer.path()).size() == 3);
}

TEST_CASE("writers started together in one directory write to different files", "[io][tensorboard]") {
  const fs::path dir = fresh_dir("two_writers");
  lyre::TensorBoardWriter a(dir.string()), b(dir.string());
  CHECK(a.path() != b.path());
  a.scalar("train/loss", 1, 1.0);
  b.scalar("eval/loss", 1, 2.0);
  a.flush();
  b.flush();
  CHECK(lyre::read_tensorboard_scalars(a.path()).at(0).tag == "train/loss");
  CHECK(lyre::read_tensorboard_scalars(b.path()).at(0).tag == "eval/loss");
}

TEST_CASE("writer and reader errors name the path and the reason", "[io][tensorboard]") {
  const fs::path dir = fresh_dir("errors");
  fs::create_directories(dir);
  spit((dir / "blocker").string(), "a file, not a directory");

  SECTION("a directory that cannot be created") {
    const std::string where = (dir / "blocker" / "runs").string();
    try {
      lyre::TensorBoardWriter writer(where);
      FAIL("no error");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()) == where + ": cannot create the TensorBoard directory: " + std::strerror(ENOTDIR));
    }
  }
  SECTION("a missing event file") {
    const std::string missing = (dir / "events.out.tfevents.missing").string();
    CHECK(read_error(missing) == missing + ": cannot open the TensorBoard event file: " + std::strerror(ENOENT));
  }
  SECTION("a tag that is not UTF-8") {
    lyre::TensorBoardWriter writer(dir.string());
    try {
      writer.scalar("lo\xffss", 1, 1.0);
      FAIL("no error");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()) == writer.path() + ": TensorBoard tag \"lo\\xffss\" is not valid UTF-8");
    }
    // An overlong encoding and a lone surrogate are not UTF-8 either.
    CHECK_THROWS(writer.scalar("\xc0\xaf", 1, 1.0));
    CHECK_THROWS(writer.scalar("\xed\xa0\x80", 1, 1.0));
    writer.flush();
    CHECK(lyre::read_tensorboard_scalars(writer.path()).empty());
  }
}
