// Safetensors reading, writing and float conversion: round trips, every corruption the reader
// rejects (with its exact message), files exchanged with an independent Python writer/checker
// (safetensors_reference.py), and the conversions against references written from the IEEE
// definitions.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../data/temp_files.hpp"
#include "io/safetensors.hpp"

namespace st = lyre::safetensors;
using st::Dtype;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string le64(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(value >> (8 * i));
  return bytes;
}

// A file made of `header` (unpadded JSON) and `data_bytes` zero bytes of data.
std::string file_of(const std::string& header, size_t data_bytes = 0) {
  return le64(header.size()) + header + std::string(data_bytes, '\0');
}

// What parsing `bytes` as "model.safetensors" throws, or "no error".
std::string parse_error(const std::string& bytes) {
  try {
    st::File::parse("model.safetensors", bytes.data(), bytes.size());
  } catch (const st::FormatError& error) {
    return error.what();
  }
  return "no error";
}

// A header with one tensor "a" whose entry is `fields` (the inside of its object).
std::string one_tensor(const std::string& fields) { return R"({"a": {)" + fields + "}}"; }

struct Command {
  int status;
  std::string output;  // stdout and stderr together
};
Command run(const std::string& command) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed: " + command);
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string reference_script() { return std::string(LYRE_SOURCE_DIR) + "/tests/io/safetensors_reference.py"; }

template <typename T>
T load(const char* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

uint32_t f32_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  return bits;
}
float f32_of(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}
uint64_t f64_bits(double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, 8);
  return bits;
}

// ---- References from the IEEE 754 definitions ----

// A binary format of 1 + E + M bits.
struct Format {
  int e, m;
  uint64_t bias() const { return (uint64_t{1} << (e - 1)) - 1; }
  uint64_t infinity() const { return ((uint64_t{1} << e) - 1) << m; }  // also one past the largest finite
};
constexpr Format kHalf{5, 10}, kBrain{8, 7}, kSingle{8, 23};

bool is_nan(uint64_t bits, Format f) { return (bits & ((uint64_t{1} << (f.e + f.m)) - 1)) > f.infinity(); }

// (-1)^s * 2^(exponent - bias) * 1.mantissa, or 2^(1 - bias) * 0.mantissa when the exponent is 0.
double decode(uint64_t bits, Format f) {
  const uint64_t magnitude_bits = bits & ((uint64_t{1} << (f.e + f.m)) - 1);
  const bool negative = bits >> (f.e + f.m) & 1;
  double magnitude;
  if (magnitude_bits == f.infinity()) {
    magnitude = std::numeric_limits<double>::infinity();
  } else if (magnitude_bits > f.infinity()) {
    return std::numeric_limits<double>::quiet_NaN();
  } else {
    const uint64_t exponent = magnitude_bits >> f.m, mantissa = magnitude_bits & ((uint64_t{1} << f.m) - 1);
    const double fraction = static_cast<double>(mantissa) / std::ldexp(1.0, f.m);
    magnitude = exponent == 0 ? std::ldexp(fraction, 1 - static_cast<int>(f.bias()))
                              : std::ldexp(1.0 + fraction, static_cast<int>(exponent) - static_cast<int>(f.bias()));
  }
  return negative ? -magnitude : magnitude;
}

// The format's value nearest to non-NaN `x`, ties to the even pattern; magnitudes from
// the largest finite value plus half an ulp upwards round to infinity (as if the exponent range
// went on, where the next value would be 2^(emax + 1)). Positive patterns are ordered like their
// values, so a binary search finds the neighbours.
uint64_t nearest(double x, Format f) {
  const uint64_t sign = std::signbit(x) ? uint64_t{1} << (f.e + f.m) : 0;
  const double a = std::fabs(x);
  const uint64_t largest = f.infinity() - 1;
  const double beyond = std::ldexp(1.0, static_cast<int>(f.bias()) + 1);
  if (a >= beyond) return sign | f.infinity();
  uint64_t low = 0, high = largest;  // decode(low) <= a
  while (low < high) {
    const uint64_t middle = low + (high - low + 1) / 2;
    if (decode(middle, f) <= a) low = middle; else high = middle - 1;
  }
  const double below = decode(low, f);
  if (below == a) return sign | low;
  const double above = low == largest ? beyond : decode(low + 1, f);
  const double down = a - below, up = above - a;
  if (down < up) return sign | low;
  if (up < down) return sign | (low + 1);
  return sign | (low % 2 == 0 ? low : low + 1);
}

std::vector<uint16_t> convert16(Dtype from, const std::vector<float>& values, Dtype to) {
  std::vector<uint16_t> out(values.size());
  st::convert(from, values.data(), to, out.data(), values.size());
  return out;
}

template <typename Out, typename In>
Out convert_one(Dtype from, In value, Dtype to) {
  Out out;
  st::convert(from, &value, to, &out, 1);
  return out;
}

}  // namespace

// ---- Round trips ----

TEST_CASE("every dtype, a scalar and an empty tensor round-trip through write_file and open") {
  lyre::test::TempDir dir;
  const std::string path = dir.path("all.safetensors");
  std::vector<std::string> payloads;
  std::vector<st::TensorRef> refs;
  std::mt19937 random(7);
  auto add = [&](const std::string& name, Dtype dtype, std::vector<int64_t> shape) {
    uint64_t count = 1;
    for (int64_t dim : shape) count *= static_cast<uint64_t>(dim);
    std::string bytes(count * st::dtype_size(dtype), '\0');
    for (char& byte : bytes) byte = static_cast<char>(random());
    if (dtype == Dtype::BOOL) for (char& byte : bytes) byte &= 1;
    payloads.push_back(bytes);
    refs.push_back({name, dtype, shape, nullptr});
  };
  add("f64", Dtype::F64, {3});
  add("f32", Dtype::F32, {2, 3});
  add("f16", Dtype::F16, {5});
  add("bf16", Dtype::BF16, {1, 1, 3});
  add("i64", Dtype::I64, {2});
  add("i32", Dtype::I32, {3});
  add("i16", Dtype::I16, {3});
  add("i8", Dtype::I8, {7});
  add("u8", Dtype::U8, {1});
  add("bool", Dtype::BOOL, {4});
  add("scalar", Dtype::F32, {});
  add("empty", Dtype::BF16, {0, 4});
  add("z.last", Dtype::F16, {2, 2});
  for (size_t i = 0; i < refs.size(); ++i) refs[i].data = payloads[i].data();
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"step", "12"}};
  st::write_file(path, refs, metadata);

  const st::File file = st::File::open(path);
  CHECK(file.path() == path);
  CHECK(file.metadata() == metadata);
  REQUIRE(file.tensors().size() == refs.size());
  uint64_t offset = 0;
  for (size_t i = 0; i < refs.size(); ++i) {
    // Written in the given order with contiguous offsets, so read back in the same order.
    const st::TensorInfo& info = file.tensors()[i];
    INFO(refs[i].name);
    CHECK(info.name == refs[i].name);
    CHECK(info.dtype == refs[i].dtype);
    CHECK(info.shape == refs[i].shape);
    CHECK(info.begin == offset);
    CHECK(info.nbytes() == payloads[i].size());
    CHECK(info.numel() * st::dtype_size(info.dtype) == info.nbytes());
    CHECK(std::string(file.data(info), info.nbytes()) == payloads[i]);
    CHECK(&file.at(refs[i].name) == &info);
    offset = info.end;
  }
  CHECK(file.at("scalar").numel() == 1);
  CHECK(file.at("empty").numel() == 0);

  const std::string bytes = read_bytes(path);
  const std::string header = st::encode_header(refs, metadata);
  CHECK(bytes.compare(0, header.size(), header) == 0);
  CHECK(bytes.size() == header.size() + offset);
  // The JSON is padded with spaces so that the data section starts 8-aligned.
  const uint64_t length = load<uint64_t>(bytes.data());
  CHECK(length % 8 == 0);
  CHECK(length + 8 == header.size());
  CHECK(header.back() != '\0');
}

TEST_CASE("a file with no tensors and no metadata round-trips") {
  lyre::test::TempDir dir;
  st::write_file(dir.path("none.safetensors"), {}, {}, false);
  CHECK(read_bytes(dir.path("none.safetensors")) == le64(8) + "{}      ");
  const st::File file = st::File::open(dir.path("none.safetensors"));
  CHECK(file.tensors().empty());
  CHECK(file.metadata().empty());
}

TEST_CASE("the header keeps the caller's tensor order, not the names' order") {
  const std::vector<float> one = {1.0f};
  const std::string header = st::encode_header({{"b", Dtype::F32, {1}, one.data()}, {"a", Dtype::F32, {}, one.data()}},
                                               {{"k", "v"}});
  CHECK(header.substr(8) ==
        R"({"__metadata__":{"k":"v"},"b":{"data_offsets":[0,4],"dtype":"F32","shape":[1]},)"
        R"("a":{"data_offsets":[4,8],"dtype":"F32","shape":[]}})"
        "     ");  // 131 bytes of JSON, padded to 136
}

TEST_CASE("tensors come back in the order of their data offsets, whatever the header's key order") {
  const std::string header =
      R"({"z": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},)"
      R"( "a": {"dtype": "U8", "shape": [1], "data_offsets": [2, 3]},)"
      R"( "m": {"dtype": "U8", "shape": [0], "data_offsets": [2, 2]}})";
  const std::string bytes = le64(header.size()) + header + "xyQ";
  const st::File file = st::File::parse("mem", bytes.data(), bytes.size());
  REQUIRE(file.tensors().size() == 3);
  CHECK(file.tensors()[0].name == "z");
  CHECK(file.tensors()[1].name == "m");  // empty, at the offset where "a" starts
  CHECK(file.tensors()[2].name == "a");
  CHECK(std::string(file.data(file.at("z")), 2) == "xy");
  CHECK(*file.data(file.at("a")) == 'Q');
  CHECK(file.find("nothing") == nullptr);
}

TEST_CASE("fields the format does not define are ignored, as the reference implementation does") {
  const std::string bytes =
      file_of(one_tensor(R"("dtype": "I8", "shape": [1], "data_offsets": [0, 1], "note": {"x": [1]})"), 1);
  CHECK(parse_error(bytes) == "no error");
}

TEST_CASE("a zero dimension makes an empty tensor even when the other dimensions multiply past 64 bits") {
  const std::string bytes = file_of(
      one_tensor(R"("dtype": "F64", "shape": [9223372036854775807, 9223372036854775807, 0], "data_offsets": [0, 0])"));
  const st::File file = st::File::parse("mem", bytes.data(), bytes.size());
  CHECK(file.at("a").numel() == 0);
}

TEST_CASE("minus zero counts as zero in shapes and data_offsets") {
  const std::string bytes = file_of(one_tensor(R"("dtype": "U8", "shape": [-0], "data_offsets": [-0, 0])"));
  const st::File file = st::File::parse("mem", bytes.data(), bytes.size());
  CHECK(file.at("a").shape == std::vector<int64_t>{0});
  CHECK(file.at("a").begin == 0);
}

// ---- Lookup and file errors ----

TEST_CASE("asking for an absent tensor names the file and the tensor") {
  const std::string bytes = file_of("{}");
  const st::File file = st::File::parse("model.safetensors", bytes.data(), bytes.size());
  try {
    file.at("lm_head.weight");
    FAIL("no error");
  } catch (const st::FormatError& error) {
    CHECK(std::string(error.what()) == R"(model.safetensors: no tensor "lm_head.weight")");
  }
}

TEST_CASE("opening a missing file is a system error naming the path, not a format error") {
  lyre::test::TempDir dir;
  const std::string path = dir.path("missing.safetensors");
  try {
    st::File::open(path);
    FAIL("no error");
  } catch (const st::FormatError&) {
    FAIL("a FormatError");
  } catch (const std::runtime_error& error) {
    CHECK(std::string(error.what()) == path + ": cannot open: No such file or directory");
  }
}

TEST_CASE("a file cut short on disk is rejected with its path and the tensor that runs past the end") {
  lyre::test::TempDir dir;
  const std::string path = dir.path("cut.safetensors");
  const std::vector<float> values(100, 1.5f);
  st::write_file(path, {{"lm_head.weight", Dtype::F32, {10, 10}, values.data()}});
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 144);
  const uint64_t header_length = load<uint64_t>(read_bytes(path).data());
  CHECK(header_length + 8 + 256 == std::filesystem::file_size(path));
  try {
    st::File::open(path);
    FAIL("no error");
  } catch (const st::FormatError& error) {
    CHECK(std::string(error.what()) ==
          path + R"(: tensor "lm_head.weight": data_offsets [0, 400] run past the end of the data section )"
                 "(256 bytes); the file may be truncated");
  }
}

// ---- Corrupt files: each message exactly ----

TEST_CASE("a file shorter than the 8-byte length field is rejected") {
  CHECK(parse_error(std::string("\x10\0\0", 3)) ==
        "model.safetensors: the file is 3 bytes, too short for the 8-byte header length");
  CHECK(parse_error("") == "model.safetensors: the file is 0 bytes, too short for the 8-byte header length");
}

TEST_CASE("a header length running past the end of the file is rejected") {
  CHECK(parse_error(le64(1000) + "{}") ==
        "model.safetensors: header length 1000 runs past the end of the file (2 bytes follow the 8-byte "
        "length); the file may be truncated");
  // A length near 2^64 must not wrap around when added to the 8 bytes before it.
  CHECK(parse_error(le64(~uint64_t{0}) + "{}") ==
        "model.safetensors: header length 18446744073709551615 runs past the end of the file (2 bytes "
        "follow the 8-byte length); the file may be truncated");
}

TEST_CASE("a header that is not JSON is rejected with the position of the error") {
  CHECK(parse_error(file_of(R"({"a": )")) == "model.safetensors: header is not valid JSON (error at byte 7 of 6)");
  CHECK(parse_error(file_of("")) == "model.safetensors: header is not valid JSON (error at byte 1 of 0)");
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [1e400], "data_offsets": [0, 4])"), 4)) ==
        "model.safetensors: header is not valid JSON (a number is too large for a double)");
  // nlohmann stops at a NUL byte as if the input ended there, which would leave the rest of the
  // header unread; NUL padding is not the format's either.
  CHECK(parse_error(file_of(std::string("{}\0\0\0\0\0\0", 8))) ==
        "model.safetensors: header is not valid JSON (error at byte 3 of 8)");
  CHECK(parse_error(file_of(std::string("{}\0\"a\": 1}", 10))) ==
        "model.safetensors: header is not valid JSON (error at byte 3 of 10)");
}

TEST_CASE("a header that is not a JSON object is rejected") {
  CHECK(parse_error(file_of("[1, 2]")) == "model.safetensors: header is an array, not a JSON object");
  CHECK(parse_error(file_of("7")) == "model.safetensors: header is 7, not a JSON object");
}

TEST_CASE("a tensor entry that is not an object is rejected") {
  CHECK(parse_error(file_of(R"({"a": [1]})")) == R"(model.safetensors: tensor "a": entry is an array, not an object)");
  CHECK(parse_error(file_of(R"({"a": null})")) == R"(model.safetensors: tensor "a": entry is null, not an object)");
}

TEST_CASE("a missing or wrongly typed dtype is rejected") {
  CHECK(parse_error(file_of(one_tensor(R"("shape": [1], "data_offsets": [0, 4])"), 4)) ==
        R"(model.safetensors: tensor "a": missing "dtype")");
  CHECK(parse_error(file_of(one_tensor(R"("dtype": 4, "shape": [1], "data_offsets": [0, 4])"), 4)) ==
        R"(model.safetensors: tensor "a": "dtype" is 4, not a string)");
}

TEST_CASE("an unknown dtype is rejected with the list lyre reads") {
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1])"), 1)) ==
        R"(model.safetensors: tensor "a": unknown dtype "F8_E4M3" (lyre reads F64, F32, F16, BF16, I64, I32, I16, )"
        "I8, U8, BOOL)");
  // Names are case-sensitive in the format.
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "f32", "shape": [1], "data_offsets": [0, 4])"), 4)) ==
        R"(model.safetensors: tensor "a": unknown dtype "f32" (lyre reads F64, F32, F16, BF16, I64, I32, I16, )"
        "I8, U8, BOOL)");
}

TEST_CASE("a missing or wrongly typed shape is rejected") {
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "data_offsets": [0, 4])"), 4)) ==
        R"(model.safetensors: tensor "a": missing "shape")");
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": "2x3", "data_offsets": [0, 24])"), 24)) ==
        R"(model.safetensors: tensor "a": "shape" is a string, not an array)");
}

TEST_CASE("negative, fractional and non-numeric dimensions are rejected with their position") {
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [2, -3], "data_offsets": [0, 24])"), 24)) ==
        R"(model.safetensors: tensor "a": "shape"[1] is -3, not a non-negative integer)");
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [2.5], "data_offsets": [0, 8])"), 8)) ==
        R"(model.safetensors: tensor "a": "shape"[0] is 2.5, not a non-negative integer)");
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [2, "3"], "data_offsets": [0, 24])"), 24)) ==
        R"(model.safetensors: tensor "a": "shape"[1] is a string, not a non-negative integer)");
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [9223372036854775808], "data_offsets": [0, 8])"),
                            8)) ==
        R"(model.safetensors: tensor "a": "shape"[0] is 9223372036854775808, too large for a dimension)");
}

TEST_CASE("a shape whose element or byte count overflows 64 bits is rejected") {
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 0])"))) ==
        R"(model.safetensors: tensor "a": shape [4294967296, 4294967296] of U8 is too large (its byte count )"
        "overflows 64 bits)");
  // 2^62 elements fit; their 2^64 bytes do not.
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 0])"))) ==
        R"(model.safetensors: tensor "a": shape [4611686018427387904] of F32 is too large (its byte count )"
        "overflows 64 bits)");
}

TEST_CASE("data_offsets that are not two unsigned integers are rejected") {
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [1])"), 4)) ==
        R"(model.safetensors: tensor "a": missing "data_offsets")");
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [1], "data_offsets": {"begin": 0})"), 4)) ==
        R"(model.safetensors: tensor "a": "data_offsets" is an object, not an array of two unsigned integers)");
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8])"), 4)) ==
        R"(model.safetensors: tensor "a": "data_offsets" has 3 entries, not 2 (begin and end))");
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [1], "data_offsets": [-4, 0])"), 4)) ==
        R"(model.safetensors: tensor "a": "data_offsets"[0] is -4, not an unsigned integer)");
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [1], "data_offsets": [0, 4.0])"), 4)) ==
        R"(model.safetensors: tensor "a": "data_offsets"[1] is 4.0, not an unsigned integer)");
  // Past 2^64 - 1 nlohmann reads a number as floating point.
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [1], "data_offsets": [0, 18446744073709551616])"),
                            4)) ==
        R"(model.safetensors: tensor "a": "data_offsets"[1] is 1.8446744073709552e+19, not an unsigned integer)");
}

TEST_CASE("data_offsets whose begin lies after their end are rejected") {
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [1], "data_offsets": [4, 0])"), 4)) ==
        R"(model.safetensors: tensor "a": data_offsets [4, 0] begin after they end)");
}

TEST_CASE("data_offsets past the data section suggest the file is truncated") {
  const std::string header = R"({"lm_head.weight": {"dtype": "F32", "shape": [10, 10], "data_offsets": [0, 400]}})";
  CHECK(parse_error(file_of(header, 256)) ==
        R"(model.safetensors: tensor "lm_head.weight": data_offsets [0, 400] run past the end of the data section )"
        "(256 bytes); the file may be truncated");
  // An end near 2^64 must not wrap around.
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "U8", "shape": [0], "data_offsets": [18446744073709551615, )"
                                       R"(18446744073709551615])"))) ==
        R"(model.safetensors: tensor "a": data_offsets [18446744073709551615, 18446744073709551615] run past the )"
        "end of the data section (0 bytes); the file may be truncated");
}

TEST_CASE("a byte count that disagrees with shape and dtype names both and the two sizes") {
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20])"), 20)) ==
        R"(model.safetensors: tensor "a": shape [2, 3] of F32 needs 24 bytes, but data_offsets [0, 20] hold 20)");
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "BF16", "shape": [], "data_offsets": [0, 4])"), 4)) ==
        R"(model.safetensors: tensor "a": shape [] of BF16 needs 2 bytes, but data_offsets [0, 4] hold 4)");
}

TEST_CASE("overlapping tensors are rejected, naming both") {
  const std::string header =
      R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
      R"( "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})";
  CHECK(parse_error(file_of(header, 24)) ==
        R"(model.safetensors: tensors "a" (data_offsets [0, 16]) and "b" (data_offsets [8, 24]) overlap)");
  // Two tensors over the same bytes.
  const std::string same =
      R"({"x": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]},)"
      R"( "y": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})";
  CHECK(parse_error(file_of(same, 8)) ==
        R"(model.safetensors: tensors "x" (data_offsets [0, 8]) and "y" (data_offsets [0, 8]) overlap)");
  // An empty tensor inside another one's bytes.
  const std::string inside =
      R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
      R"( "e": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]}})";
  CHECK(parse_error(file_of(inside, 16)) ==
        R"(model.safetensors: tensors "a" (data_offsets [0, 16]) and "e" (data_offsets [8, 8]) overlap)");
}

TEST_CASE("bytes of the data section that no tensor covers are rejected") {
  const std::string between =
      R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
      R"( "b": {"dtype": "F32", "shape": [4], "data_offsets": [24, 40]}})";
  CHECK(parse_error(file_of(between, 40)) ==
        R"(model.safetensors: bytes [16, 24) of the data section belong to no tensor (between "a" and "b"))");
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [4], "data_offsets": [8, 24])"), 24)) ==
        R"(model.safetensors: bytes [0, 8) of the data section belong to no tensor (before "a"))");
}

TEST_CASE("data that goes on after the last tensor is rejected") {
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "F32", "shape": [4], "data_offsets": [0, 16])"), 20)) ==
        R"(model.safetensors: bytes [16, 20) of the data section belong to no tensor (after "a"); the file has )"
        "trailing bytes");
  CHECK(parse_error(file_of("{}", 8)) ==
        "model.safetensors: bytes [0, 8) of the data section belong to no tensor (the header lists no tensors); "
        "the file has trailing bytes");
}

TEST_CASE("metadata that is not an object of strings is rejected") {
  CHECK(parse_error(file_of(R"({"__metadata__": ["pt"]})")) ==
        R"(model.safetensors: "__metadata__" is an array, not an object of strings)");
  CHECK(parse_error(file_of(R"({"__metadata__": {"format": "pt", "step": 5}})")) ==
        R"(model.safetensors: "__metadata__": "step" is 5, not a string)");
}

TEST_CASE("a key that appears twice in the header is rejected, though JSON parsers keep one") {
  const std::string entry = R"({"dtype": "U8", "shape": [1], "data_offsets": [0, 1]})";
  CHECK(parse_error(file_of(R"({"a": )" + entry + R"(, "a": )" + entry + "}", 1)) ==
        R"(model.safetensors: tensor "a" appears twice in the header)");
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "U8", "dtype": "I8", "shape": [1], "data_offsets": [0, 1])"), 1)) ==
        R"(model.safetensors: tensor "a": key "dtype" appears twice)");
  CHECK(parse_error(file_of(R"({"__metadata__": {"k": "1", "k": "2"}})")) ==
        R"(model.safetensors: "__metadata__": key "k" appears twice)");
  CHECK(parse_error(file_of(R"({"__metadata__": {}, "__metadata__": {}})")) ==
        R"(model.safetensors: "__metadata__" appears twice in the header)");
  // Deeper repeats sit in fields the format does not define, which are ignored anyway.
  CHECK(parse_error(file_of(one_tensor(R"("dtype": "U8", "shape": [1], "data_offsets": [0, 1], "x": {"k": 1, "k": 2})"),
                            1)) == "no error");
}

TEST_CASE("a tensor name holding quotes or control characters is escaped in messages") {
  CHECK(parse_error(file_of(R"({"we\"ird\n": {"shape": [1], "data_offsets": [0, 4]}})", 4)) ==
        R"(model.safetensors: tensor "we\"ird\n": missing "dtype")");
}

// ---- Writing errors ----

TEST_CASE("write_file rejects repeated and reserved names and negative dimensions") {
  lyre::test::TempDir dir;
  const std::string path = dir.path("bad.safetensors");
  const float value = 1.0f;
  auto message = [&](const std::vector<st::TensorRef>& tensors) -> std::string {
    try {
      st::write_file(path, tensors);
    } catch (const std::invalid_argument& error) {
      return error.what();
    }
    return "no error";
  };
  CHECK(message({{"w", Dtype::F32, {}, &value}, {"w", Dtype::F32, {}, &value}}) ==
        path + R"(: tensor "w" appears twice)");
  CHECK(message({{"__metadata__", Dtype::F32, {}, &value}}) == path + R"(: a tensor may not be named "__metadata__")");
  CHECK(message({{"w", Dtype::F32, {2, -1}, &value}}) == path + R"(: tensor "w": shape [2, -1] has a negative dimension)");
  CHECK(message({{"w", Dtype::F32, {2}, nullptr}}) == path + R"(: tensor "w" has no data)");
  CHECK(message({{"w\xff", Dtype::F32, {}, &value}}) == path + ": tensor name \"w\xef\xbf\xbd\" is not valid UTF-8");  // shown with U+FFFD
  CHECK_FALSE(std::filesystem::exists(path));
  try {
    st::encode_header({{"w", Dtype::F32, {}, &value}, {"w", Dtype::F32, {}, &value}});
    FAIL("no error");
  } catch (const std::invalid_argument& error) {
    CHECK(std::string(error.what()) == R"(safetensors header: tensor "w" appears twice)");
  }
}

TEST_CASE("write_file names the path and the system's reason when it cannot write") {
  lyre::test::TempDir dir;
  const std::string path = dir.path("no/such/dir/model.safetensors");
  const float value = 1.0f;
  try {
    st::write_file(path, {{"w", Dtype::F32, {}, &value}});
    FAIL("no error");
  } catch (const std::runtime_error& error) {
    CHECK(std::string(error.what()) == path + ": cannot create: No such file or directory");
  }
  if (std::filesystem::exists("/dev/full")) {
    try {
      st::write_file("/dev/full", {{"w", Dtype::F32, {}, &value}});
      FAIL("no error");
    } catch (const std::runtime_error& error) {
      CHECK(std::string(error.what()) == "/dev/full: cannot write: No space left on device");
    }
  }
}

// ---- An independent writer and checker ----

TEST_CASE("a file written by an independent Python writer reads back with the values it wrote") {
  lyre::test::TempDir dir;
  const std::string path = dir.path("python.safetensors");
  const Command written = run("python3 '" + reference_script() + "' write '" + path + "'");
  INFO(written.output);
  REQUIRE(written.status == 0);
  const nlohmann::json expected = nlohmann::json::parse(written.output);

  const st::File file = st::File::open(path);
  CHECK(nlohmann::json(file.metadata()) == expected["metadata"]);
  REQUIRE(file.tensors().size() == expected["tensors"].size());
  for (const auto& [name, tensor] : expected["tensors"].items()) {
    INFO("tensor " << name);
    const st::TensorInfo& info = file.at(name);
    CHECK(st::dtype_name(info.dtype) == tensor["dtype"].get<std::string>());
    CHECK(nlohmann::json(info.shape) == tensor["shape"]);
    const nlohmann::json& values = tensor["values"];
    REQUIRE(info.numel() == values.size());
    const char* data = file.data(info);
    for (size_t i = 0; i < values.size(); ++i) {
      INFO("element " << i);
      switch (info.dtype) {
        case Dtype::F64:
        case Dtype::F32:
        case Dtype::F16:
        case Dtype::BF16: {
          double value;
          st::convert(info.dtype, data + i * st::dtype_size(info.dtype), Dtype::F64, &value, 1);
          const double want = std::strtod(values[i].get<std::string>().c_str(), nullptr);
          CHECK(f64_bits(value) == f64_bits(want));
          break;
        }
        case Dtype::I64: CHECK(load<int64_t>(data + 8 * i) == values[i].get<int64_t>()); break;
        case Dtype::I32: CHECK(load<int32_t>(data + 4 * i) == values[i].get<int64_t>()); break;
        case Dtype::I16: CHECK(load<int16_t>(data + 2 * i) == values[i].get<int64_t>()); break;
        case Dtype::I8: CHECK(load<int8_t>(data + i) == values[i].get<int64_t>()); break;
        case Dtype::U8: CHECK(load<uint8_t>(data + i) == values[i].get<int64_t>()); break;
        case Dtype::BOOL: CHECK((load<uint8_t>(data + i) == 1) == values[i].get<bool>()); break;
      }
    }
  }
}

TEST_CASE("a file lyre writes passes the independent checker, which reads the same values") {
  lyre::test::TempDir dir;
  const std::string path = dir.path("lyre.safetensors");
  const std::vector<float> f32 = {1.0f, -0.0f, std::numeric_limits<float>::infinity(), 1e-45f, 3.25f, -7.5e10f};
  const std::vector<double> f64 = {0.1, -1e300};
  const std::vector<uint16_t> bf16 = {0x3f80, 0xc0a0, 0x0001};      // 1, -5, smallest subnormal
  const std::vector<uint16_t> f16 = {0x3c00, 0x7bff, 0x8001, 0xfc00};  // 1, 65504, -2^-24, -inf
  const std::vector<int64_t> i64 = {-9007199254740993};
  const std::vector<int32_t> i32 = {-2147483647 - 1, 5};
  const std::vector<int16_t> i16 = {-300};
  const std::vector<int8_t> i8 = {-128, 127};
  const std::vector<uint8_t> u8 = {255};
  const std::vector<uint8_t> flags = {1, 0, 1};
  st::write_file(path,
                 {{"z.first", Dtype::F32, {2, 3}, f32.data()},
                  {"f64", Dtype::F64, {2}, f64.data()},
                  {"bf16", Dtype::BF16, {3}, bf16.data()},
                  {"empty", Dtype::F16, {3, 0}, nullptr},
                  {"f16", Dtype::F16, {2, 2}, f16.data()},
                  {"i64", Dtype::I64, {}, i64.data()},
                  {"i32", Dtype::I32, {2}, i32.data()},
                  {"i16", Dtype::I16, {1}, i16.data()},
                  {"i8", Dtype::I8, {2}, i8.data()},
                  {"u8", Dtype::U8, {1}, u8.data()},
                  {"flags", Dtype::BOOL, {3}, flags.data()}},
                 {{"format", "pt"}, {"note", "caf\xc3\xa9 \"quoted\""}});
  const Command checked = run("python3 '" + reference_script() + "' read '" + path + "'");
  INFO(checked.output);
  REQUIRE(checked.status == 0);
  const nlohmann::json seen = nlohmann::json::parse(checked.output);
  CHECK(seen["order"] == nlohmann::json({"z.first", "f64", "bf16", "empty", "f16", "i64", "i32", "i16", "i8", "u8",
                                         "flags"}));
  CHECK(seen["metadata"] == nlohmann::json({{"format", "pt"}, {"note", "caf\xc3\xa9 \"quoted\""}}));
  const nlohmann::json& tensors = seen["tensors"];
  // Floats come as float.hex() strings, compared bit for bit with what lyre wrote.
  auto floats = [&](const char* name) {
    std::vector<uint64_t> bits;
    for (const auto& value : tensors[name]["values"]) bits.push_back(f64_bits(std::strtod(value.get<std::string>().c_str(), nullptr)));
    return bits;
  };
  auto wide = [](auto values, auto widen) {
    std::vector<uint64_t> bits;
    for (auto value : values) bits.push_back(f64_bits(widen(value)));
    return bits;
  };
  CHECK(tensors["z.first"]["dtype"] == "F32");
  CHECK(tensors["z.first"]["shape"] == nlohmann::json({2, 3}));
  CHECK(floats("z.first") == wide(f32, [](float v) { return double(v); }));
  CHECK(floats("f64") == wide(f64, [](double v) { return v; }));
  CHECK(floats("bf16") == wide(bf16, [](uint16_t v) { return decode(v, kBrain); }));
  CHECK(floats("f16") == wide(f16, [](uint16_t v) { return decode(v, kHalf); }));
  CHECK(tensors["empty"]["shape"] == nlohmann::json({3, 0}));
  CHECK(tensors["empty"]["values"] == nlohmann::json::array());
  CHECK(tensors["i64"]["shape"] == nlohmann::json::array());
  CHECK(tensors["i64"]["values"] == nlohmann::json({-9007199254740993}));
  CHECK(tensors["i32"]["values"] == nlohmann::json({-2147483648, 5}));
  CHECK(tensors["i16"]["values"] == nlohmann::json({-300}));
  CHECK(tensors["i8"]["values"] == nlohmann::json({-128, 127}));
  CHECK(tensors["u8"]["values"] == nlohmann::json({255}));
  CHECK(tensors["flags"]["values"] == nlohmann::json({true, false, true}));
}

TEST_CASE("the independent checker rejects a file whose tensors are not contiguous") {
  // The checker itself must be able to fail, or passing it would prove nothing.
  lyre::test::TempDir dir;
  const std::string path = dir.path("gap.safetensors");
  std::string header = one_tensor(R"("dtype": "U8", "shape": [1], "data_offsets": [1, 2])");
  header.append((8 - header.size() % 8) % 8, ' ');
  std::ofstream(path, std::ios::binary) << file_of(header, 2);
  const Command checked = run("python3 '" + reference_script() + "' read '" + path + "'");
  CHECK(checked.status == 1);
  CHECK(checked.output == "a: begins at 1, expected 0\n");
}

// ---- Conversion ----

TEST_CASE("every bf16 and f16 value widens exactly and narrows back to itself, signalling NaNs quieted") {
  for (const auto& [dtype, format] : {std::pair(Dtype::BF16, kBrain), std::pair(Dtype::F16, kHalf)}) {
    INFO(st::dtype_name(dtype));
    std::vector<uint16_t> all(65536);
    for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
    const uint16_t quiet_bit = static_cast<uint16_t>(1u << (format.m - 1));
    for (Dtype wide : {Dtype::F32, Dtype::F64}) {
      INFO("through " << st::dtype_name(wide));
      std::vector<char> widened(all.size() * st::dtype_size(wide));
      std::vector<uint16_t> back(all.size());
      st::convert(dtype, all.data(), wide, widened.data(), all.size());
      st::convert(wide, widened.data(), dtype, back.data(), all.size());
      size_t mismatches = 0;
      for (uint32_t i = 0; i < 65536; ++i) {
        const double value = wide == Dtype::F32 ? load<float>(widened.data() + 4 * i) : load<double>(widened.data() + 8 * i);
        const double want = decode(i, format);
        const bool nan = std::isnan(want);
        const bool same_value = nan ? std::isnan(value) && std::signbit(value) == bool(i & 0x8000)
                                    : f64_bits(value) == f64_bits(want);
        const uint16_t want_back = nan ? static_cast<uint16_t>(i | quiet_bit) : static_cast<uint16_t>(i);
        if (!same_value || back[i] != want_back) {
          if (++mismatches <= 5) {
            UNSCOPED_INFO("pattern " << i << " widened to " << value << " (want " << want << "), back " << back[i]);
          }
        }
      }
      CHECK(mismatches == 0);
    }
  }
}

TEST_CASE("f32 narrows to bf16 and f16 as the nearest value, ties to even, over a sweep of patterns") {
  // Every upper half with lower halves at and around each rounding boundary of both formats,
  // then random patterns.
  std::vector<uint32_t> inputs;
  for (uint32_t upper = 0; upper < 65536; ++upper) {
    for (uint32_t lower : {0x0000u, 0x0001u, 0x0fffu, 0x1000u, 0x1001u, 0x3000u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {
      inputs.push_back(upper << 16 | lower);
    }
  }
  std::mt19937 random(11);
  for (int i = 0; i < 100000; ++i) inputs.push_back(static_cast<uint32_t>(random()));
  for (const auto& [dtype, format] : {std::pair(Dtype::BF16, kBrain), std::pair(Dtype::F16, kHalf)}) {
    INFO(st::dtype_name(dtype));
    std::vector<uint16_t> out(inputs.size());
    st::convert(Dtype::F32, inputs.data(), dtype, out.data(), inputs.size());
    size_t mismatches = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const double x = f32_of(inputs[i]);
      const bool ok = std::isnan(x) ? is_nan(out[i], format) && (out[i] >> 15) == (inputs[i] >> 31) &&
                                          (out[i] & (1u << (format.m - 1)))
                                    : out[i] == nearest(x, format);
      if (!ok && ++mismatches <= 5) {
        UNSCOPED_INFO("f32 pattern " << inputs[i] << " gave " << out[i] << ", want " << nearest(x, format));
      }
    }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("f64 narrows to f32, bf16 and f16 in one rounding, at and around every halfway point") {
  std::mt19937_64 random(5);
  for (const auto& [dtype, format] : {std::pair(Dtype::F32, kSingle), std::pair(Dtype::BF16, kBrain),
                                      std::pair(Dtype::F16, kHalf)}) {
    INFO(st::dtype_name(dtype));
    // Halfway points between neighbours (exact in double), a double's ulp either side, and the
    // values themselves: every pattern of the 16-bit formats, a sample of f32's.
    std::vector<double> inputs;
    const uint64_t largest = format.infinity() - 1;
    const uint64_t samples = dtype == Dtype::F32 ? 200000 : largest + 1;
    for (uint64_t k = 0; k < samples; ++k) {
      const uint64_t p = dtype == Dtype::F32 ? random() % (largest + 1) : k;
      const double value = decode(p, format);
      const double next = p == largest ? std::ldexp(1.0, static_cast<int>(format.bias()) + 1) : decode(p + 1, format);
      const double middle = value + (next - value) / 2;
      for (double x : {value, middle, std::nextafter(middle, 0.0), std::nextafter(middle, HUGE_VAL)}) {
        inputs.push_back(x);
        inputs.push_back(-x);
      }
    }
    for (int i = 0; i < 100000; ++i) inputs.push_back(std::ldexp(std::uniform_real_distribution<double>(-2, 2)(random),
                                                                  static_cast<int>(random() % 300) - 150));
    inputs.push_back(std::numeric_limits<double>::denorm_min());
    inputs.push_back(-std::numeric_limits<double>::max());
    std::vector<char> out(inputs.size() * st::dtype_size(dtype));
    st::convert(Dtype::F64, inputs.data(), dtype, out.data(), inputs.size());
    size_t mismatches = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const uint64_t got = dtype == Dtype::F32 ? load<uint32_t>(out.data() + 4 * i) : load<uint16_t>(out.data() + 2 * i);
      if (got != nearest(inputs[i], format) && ++mismatches <= 5) {
        UNSCOPED_INFO(std::hexfloat << inputs[i] << " gave " << got << ", want " << nearest(inputs[i], format));
      }
    }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("f64 to bf16 does not round twice through f32") {
  // 1 + 2^-8 + 2^-30 lies just above the bf16 halfway point 1 + 2^-8; through f32 it would become
  // exactly the halfway point and round down to even (1.0).
  const double x = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30);
  CHECK(convert_one<uint16_t>(Dtype::F64, x, Dtype::BF16) == 0x3f81);
  CHECK(convert_one<uint16_t>(Dtype::F32, convert_one<float>(Dtype::F64, x, Dtype::F32), Dtype::BF16) == 0x3f80);
}

TEST_CASE("infinities, signed zeros and NaN survive every floating conversion") {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> specials = {inf, -inf, 0.0f, -0.0f, f32_of(0x7fc00000), f32_of(0xffc00001),
                                       f32_of(0x7f800001)};
  CHECK(convert16(Dtype::F32, specials, Dtype::BF16) ==
        std::vector<uint16_t>{0x7f80, 0xff80, 0x0000, 0x8000, 0x7fc0, 0xffc0, 0x7fc0});
  CHECK(convert16(Dtype::F32, specials, Dtype::F16) ==
        std::vector<uint16_t>{0x7c00, 0xfc00, 0x0000, 0x8000, 0x7e00, 0xfe00, 0x7e00});
  // A signalling NaN whose payload lies only in the bits that narrowing drops stays a NaN.
  CHECK(convert_one<uint16_t>(Dtype::F64, -std::numeric_limits<double>::signaling_NaN(), Dtype::F16) >= 0xfe00);
  CHECK(f64_bits(convert_one<double>(Dtype::F32, f32_of(0x7f800001), Dtype::F64)) == 0x7ff8000020000000);
  // A signalling f16 NaN widens quiet, with its sign and payload.
  const float widened = convert_one<float>(Dtype::F16, uint16_t{0xfd00}, Dtype::F32);
  CHECK(f32_bits(widened) == 0xffe00000);
}

TEST_CASE("narrowing overflows to infinity only from the largest value plus half an ulp") {
  CHECK(convert_one<uint16_t>(Dtype::F32, 65504.0f, Dtype::F16) == 0x7bff);
  CHECK(convert_one<uint16_t>(Dtype::F32, 65519.99f, Dtype::F16) == 0x7bff);
  CHECK(convert_one<uint16_t>(Dtype::F32, 65520.0f, Dtype::F16) == 0x7c00);
  CHECK(convert_one<uint16_t>(Dtype::F32, -1e30f, Dtype::F16) == 0xfc00);
  CHECK(convert_one<uint16_t>(Dtype::F32, std::numeric_limits<float>::max(), Dtype::BF16) == 0x7f80);
  CHECK(convert_one<uint16_t>(Dtype::F32, f32_of(0x7f7f7fff), Dtype::BF16) == 0x7f7f);
  CHECK(convert_one<uint32_t>(Dtype::F64, 1e300, Dtype::F32) == 0x7f800000);
}

TEST_CASE("halves near zero round to subnormals, and half the smallest subnormal rounds to zero") {
  const float tiny = std::ldexp(1.0f, -24);  // f16's smallest subnormal
  CHECK(convert_one<uint16_t>(Dtype::F32, tiny, Dtype::F16) == 0x0001);
  CHECK(convert_one<uint16_t>(Dtype::F32, tiny / 2, Dtype::F16) == 0x0000);
  CHECK(convert_one<uint16_t>(Dtype::F32, std::nextafter(tiny / 2, 1.0f), Dtype::F16) == 0x0001);
  CHECK(convert_one<uint16_t>(Dtype::F32, -tiny * 1.5f, Dtype::F16) == 0x8002);  // tie to even
  CHECK(convert_one<uint16_t>(Dtype::F32, std::ldexp(1023.5f, -24), Dtype::F16) == 0x0400);  // carries into normal
  CHECK(convert_one<float>(Dtype::F16, uint16_t{0x03ff}, Dtype::F32) == std::ldexp(1023.0f, -24));
  CHECK(convert_one<uint16_t>(Dtype::F32, std::ldexp(1.0f, -134), Dtype::BF16) == 0x0000);
  CHECK(convert_one<uint16_t>(Dtype::F32, std::ldexp(3.0f, -134), Dtype::BF16) == 0x0002);
}

TEST_CASE("conversion reads and writes unaligned buffers") {
  const std::vector<float> values = {1.5f, -2.25f, 1e-3f};
  std::vector<char> source(1 + 4 * values.size()), narrow(1 + 2 * values.size()), wide(1 + 8 * values.size());
  std::memcpy(source.data() + 1, values.data(), 4 * values.size());
  st::convert(Dtype::F32, source.data() + 1, Dtype::F16, narrow.data() + 1, values.size());
  st::convert(Dtype::F16, narrow.data() + 1, Dtype::F64, wide.data() + 1, values.size());
  CHECK(load<double>(wide.data() + 1) == 1.5);
  CHECK(load<double>(wide.data() + 9) == -2.25);
  CHECK(load<double>(wide.data() + 17) == decode(0x1419, kHalf));  // 1e-3 in f16
}

TEST_CASE("converting to or from a non-floating dtype is rejected") {
  int32_t in = 1;
  float out = 0;
  try {
    st::convert(Dtype::I32, &in, Dtype::F32, &out, 1);
    FAIL("no error");
  } catch (const std::invalid_argument& error) {
    CHECK(std::string(error.what()) == "safetensors::convert: I32 is not a floating-point dtype (F64, F32, F16, BF16)");
  }
  CHECK_THROWS_AS(st::convert(Dtype::F32, &out, Dtype::BOOL, &in, 1), std::invalid_argument);
}

TEST_CASE("dtype names parse back to their dtype and nothing else does") {
  for (Dtype dtype : {Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::I64, Dtype::I32, Dtype::I16, Dtype::I8,
                      Dtype::U8, Dtype::BOOL}) {
    CHECK(st::parse_dtype(st::dtype_name(dtype)) == dtype);
  }
  CHECK(st::dtype_size(Dtype::BF16) == 2);
  CHECK(st::dtype_size(Dtype::I64) == 8);
  CHECK(st::dtype_size(Dtype::BOOL) == 1);
  CHECK_FALSE(st::parse_dtype("bf16"));
  CHECK_FALSE(st::parse_dtype("U16"));
}
