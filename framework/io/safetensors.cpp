#include "io/safetensors.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "io/mapped_file.hpp"

// Tensor bytes are little-endian in the format and are handed out (and converted) in place.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "lyre's safetensors code reads tensors in place and needs a little-endian machine"
#endif

namespace lyre::safetensors {
namespace {

using nlohmann::json;

constexpr Dtype kDtypes[] = {Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::I64,
                             Dtype::I32, Dtype::I16, Dtype::I8,  Dtype::U8,   Dtype::BOOL};
constexpr const char* kMetadataKey = "__metadata__";

// A name as JSON spells it, quotes and escapes included, so that a name holding a quote or a
// control character cannot make a message ambiguous. Invalid UTF-8 (only possible in names the
// caller gave, never in parsed ones) is shown with replacement characters.
std::string quote(std::string_view text) {
  return json(std::string(text)).dump(-1, ' ', false, json::error_handler_t::replace);
}

// What a JSON value is, for "is X, not Y": a number is shown as itself, anything else by its kind
// (never dumped, since a hostile header may nest it arbitrarily deep).
std::string describe(const json& value) {
  switch (value.type()) {
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return value.dump();
    case json::value_t::string: return "a string";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::null: return "null";
    default: return "a " + std::string(value.type_name());
  }
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

std::string offsets_text(uint64_t begin, uint64_t end) {
  return "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// The element count and byte count of a shape, or nullopt when either overflows 64 bits. A zero
// dimension makes the tensor empty whatever the others are.
std::optional<uint64_t> checked_nbytes(const std::vector<int64_t>& shape, Dtype dtype) {
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  uint64_t count = 1;
  for (int64_t dim : shape) {
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(dim), &count)) return std::nullopt;
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(count, static_cast<uint64_t>(dtype_size(dtype)), &bytes)) return std::nullopt;
  return bytes;
}

}  // namespace

size_t dtype_size(Dtype dtype) {
  switch (dtype) {
    case Dtype::F64:
    case Dtype::I64: return 8;
    case Dtype::F32:
    case Dtype::I32: return 4;
    case Dtype::F16:
    case Dtype::BF16:
    case Dtype::I16: return 2;
    case Dtype::I8:
    case Dtype::U8:
    case Dtype::BOOL: return 1;
  }
  throw std::invalid_argument("safetensors: unknown Dtype value " + std::to_string(static_cast<int>(dtype)));
}

const char* dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::F64: return "F64";
    case Dtype::F32: return "F32";
    case Dtype::F16: return "F16";
    case Dtype::BF16: return "BF16";
    case Dtype::I64: return "I64";
    case Dtype::I32: return "I32";
    case Dtype::I16: return "I16";
    case Dtype::I8: return "I8";
    case Dtype::U8: return "U8";
    case Dtype::BOOL: return "BOOL";
  }
  throw std::invalid_argument("safetensors: unknown Dtype value " + std::to_string(static_cast<int>(dtype)));
}

std::optional<Dtype> parse_dtype(std::string_view name) {
  for (Dtype dtype : kDtypes) {
    if (name == dtype_name(dtype)) return dtype;
  }
  return std::nullopt;
}

uint64_t TensorInfo::numel() const {
  uint64_t count = 1;
  for (int64_t dim : shape) count *= static_cast<uint64_t>(dim);
  return count;
}

// ---- Reading ----

struct File::Mapping {
  MappedFile file;
};

File::File(File&&) noexcept = default;
File& File::operator=(File&&) noexcept = default;
File::~File() = default;

File File::open(const std::string& path) {
  File file;
  file.mapping_ = std::make_unique<Mapping>(Mapping{MappedFile(path)});
  file.path_ = path;
  file.bytes_ = file.mapping_->file.data();
  file.size_ = file.mapping_->file.size();
  file.parse_header();
  return file;
}

File File::parse(const std::string& name, const char* data, size_t size) {
  File file;
  file.path_ = name;
  file.bytes_ = data;
  file.size_ = size;
  file.parse_header();
  return file;
}

void File::parse_header() {
  auto fail = [&](const std::string& what) -> FormatError { return FormatError(path_ + ": " + what); };
  if (size_ < 8) {
    throw fail("the file is " + std::to_string(size_) + " bytes, too short for the 8-byte header length");
  }
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = header_length << 8 | static_cast<unsigned char>(bytes_[i]);
  if (header_length > size_ - 8) {
    throw fail("header length " + std::to_string(header_length) + " runs past the end of the file (" +
               std::to_string(size_ - 8) + " bytes follow the 8-byte length); the file may be truncated");
  }
  data_start_ = 8 + static_cast<size_t>(header_length);
  const uint64_t data_size = size_ - data_start_;

  // nlohmann keeps one of two equal keys silently; the callback sees every key as it is read, so
  // a set per open object finds the repeat. Only the top level (tensor names) and the level below
  // (a tensor's fields, the metadata's keys) matter.
  std::vector<std::set<std::string>> open_objects;
  std::string top_key, duplicate;
  json::parser_callback_t on_event = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      open_objects.pop_back();
    } else if (event == json::parse_event_t::key && open_objects.size() <= 2 && duplicate.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (open_objects.size() == 1) top_key = key;
      if (!open_objects.back().insert(key).second) {
        if (open_objects.size() == 1) {
          duplicate = key == kMetadataKey ? "\"__metadata__\" appears twice in the header"
                                          : "tensor " + quote(key) + " appears twice in the header";
        } else {
          duplicate = (top_key == kMetadataKey ? std::string("\"__metadata__\"") : "tensor " + quote(top_key)) +
                      ": key " + quote(key) + " appears twice";
        }
      }
    }
    return true;
  };
  // nlohmann ends its input at a NUL byte, which would leave what follows unread.
  if (const void* nul = std::memchr(bytes_ + 8, '\0', static_cast<size_t>(header_length))) {
    throw fail("header is not valid JSON (error at byte " +
               std::to_string(static_cast<const char*>(nul) - (bytes_ + 8) + 1) + " of " +
               std::to_string(header_length) + ")");
  }
  json header;
  try {
    header = json::parse(bytes_ + 8, bytes_ + data_start_, on_event);
  } catch (const json::parse_error& error) {
    throw fail("header is not valid JSON (error at byte " + std::to_string(error.byte) + " of " +
               std::to_string(header_length) + ")");
  } catch (const json::out_of_range&) {
    // nlohmann's only out_of_range while parsing: a number beyond a double's range.
    throw fail("header is not valid JSON (a number is too large for a double)");
  }
  if (!header.is_object()) throw fail("header is " + describe(header) + ", not a JSON object");
  if (!duplicate.empty()) throw fail(duplicate);

  tensors_.clear();
  index_.clear();
  metadata_.clear();
  for (const auto& item : header.items()) {
    const std::string& name = item.key();
    const json& entry = item.value();
    if (name == kMetadataKey) {
      if (!entry.is_object()) throw fail("\"__metadata__\" is " + describe(entry) + ", not an object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          throw fail("\"__metadata__\": " + quote(key) + " is " + describe(value) + ", not a string");
        }
        metadata_.emplace(key, value.get<std::string>());
      }
      continue;
    }
    const std::string where = "tensor " + quote(name) + ": ";
    if (!entry.is_object()) throw fail(where + "entry is " + describe(entry) + ", not an object");
    auto field = [&](const char* key) -> const json& {
      const auto it = entry.find(key);
      if (it == entry.end()) throw fail(where + "missing \"" + key + "\"");
      return *it;
    };

    TensorInfo info;
    info.name = name;
    const json& dtype = field("dtype");
    if (!dtype.is_string()) throw fail(where + "\"dtype\" is " + describe(dtype) + ", not a string");
    const auto parsed_dtype = parse_dtype(dtype.get_ref<const std::string&>());
    if (!parsed_dtype) {
      throw fail(where + "unknown dtype " + quote(dtype.get_ref<const std::string&>()) +
                 " (lyre reads F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
    }
    info.dtype = *parsed_dtype;

    const json& shape = field("shape");
    if (!shape.is_array()) throw fail(where + "\"shape\" is " + describe(shape) + ", not an array");
    for (size_t i = 0; i < shape.size(); ++i) {
      const json& dim = shape[i];
      const std::string dim_where = where + "\"shape\"[" + std::to_string(i) + "] is " + describe(dim);
      if (dim.is_number_unsigned()) {
        if (dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          throw fail(dim_where + ", too large for a dimension");
        }
      } else if (!dim.is_number_integer() || dim.get<int64_t>() < 0) {
        throw fail(dim_where + ", not a non-negative integer");
      }
      info.shape.push_back(dim.get<int64_t>());
    }
    const auto needed = checked_nbytes(info.shape, info.dtype);
    if (!needed) {
      throw fail(where + "shape " + shape_text(info.shape) + " of " + dtype_name(info.dtype) +
                 " is too large (its byte count overflows 64 bits)");
    }

    const json& offsets = field("data_offsets");
    if (!offsets.is_array()) {
      throw fail(where + "\"data_offsets\" is " + describe(offsets) + ", not an array of two unsigned integers");
    }
    if (offsets.size() != 2) {
      throw fail(where + "\"data_offsets\" has " + std::to_string(offsets.size()) +
                 " entries, not 2 (begin and end)");
    }
    for (size_t i = 0; i < 2; ++i) {
      // nlohmann reads "-0" as a signed integer; it is still zero.
      const json& offset = offsets[i];
      if (!offset.is_number_unsigned() && !(offset.is_number_integer() && offset.get<int64_t>() >= 0)) {
        throw fail(where + "\"data_offsets\"[" + std::to_string(i) + "] is " + describe(offsets[i]) +
                   ", not an unsigned integer");
      }
    }
    info.begin = offsets[0].get<uint64_t>();
    info.end = offsets[1].get<uint64_t>();
    const std::string offsets_where = where + offsets_text(info.begin, info.end);
    if (info.begin > info.end) throw fail(offsets_where + " begin after they end");
    if (info.end > data_size) {
      throw fail(offsets_where + " run past the end of the data section (" + std::to_string(data_size) +
                 " bytes); the file may be truncated");
    }
    if (info.nbytes() != *needed) {
      throw fail(where + "shape " + shape_text(info.shape) + " of " + dtype_name(info.dtype) + " needs " +
                 std::to_string(*needed) + " bytes, but " + offsets_text(info.begin, info.end) + " hold " +
                 std::to_string(info.nbytes()));
    }
    tensors_.push_back(std::move(info));
  }

  // The reference implementation accepts a file only when its tensors tile the data section
  // exactly; so does lyre, which also means no byte of the file goes unchecked. Items came in
  // name order, so ties (empty tensors at one offset) stay in name order.
  std::stable_sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
  });
  auto gap = [&](uint64_t from, uint64_t to, const std::string& context, const std::string& note = "") {
    return fail("bytes [" + std::to_string(from) + ", " + std::to_string(to) +
                ") of the data section belong to no tensor (" + context + ")" + note);
  };
  uint64_t covered = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const TensorInfo& tensor = tensors_[i];
    if (tensor.begin < covered) {
      const TensorInfo& previous = tensors_[i - 1];
      throw fail("tensors " + quote(previous.name) + " (" + offsets_text(previous.begin, previous.end) +
                 ") and " + quote(tensor.name) + " (" + offsets_text(tensor.begin, tensor.end) + ") overlap");
    }
    if (tensor.begin > covered) {
      throw gap(covered, tensor.begin,
                i == 0 ? "before " + quote(tensor.name)
                       : "between " + quote(tensors_[i - 1].name) + " and " + quote(tensor.name));
    }
    covered = tensor.end;
  }
  if (covered != data_size) {
    throw gap(covered, data_size,
              tensors_.empty() ? std::string("the header lists no tensors") : "after " + quote(tensors_.back().name),
              "; the file has trailing bytes");
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

const TensorInfo* File::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::at(std::string_view name) const {
  if (const TensorInfo* tensor = find(name)) return *tensor;
  throw FormatError(path_ + ": no tensor " + quote(name));
}

const char* File::data(const TensorInfo& tensor) const { return bytes_ + data_start_ + tensor.begin; }

// ---- Conversion ----

namespace {

// A binary floating format of 1 + E + M bits, as far as rounding into it needs.
struct Format {
  int exponent_bits, mantissa_bits;
};
constexpr Format kF32{8, 23}, kF16{5, 10}, kBF16{8, 7};

uint64_t bits_of(double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, 8);
  return bits;
}
double double_of(uint64_t bits) {
  double value;
  std::memcpy(&value, &bits, 8);
  return value;
}

// A value of `format` (its bits in the low 1 + E + M bits) as a double, which holds every such
// value exactly. A NaN comes back quiet, with its sign and payload.
double widen(uint64_t bits, Format format) {
  const int m = format.mantissa_bits, e = format.exponent_bits;
  const uint64_t sign = bits >> (e + m) & 1;
  const uint64_t exponent = bits >> m & ((uint64_t{1} << e) - 1);
  const uint64_t mantissa = bits & ((uint64_t{1} << m) - 1);
  const int bias = (1 << (e - 1)) - 1;
  if (exponent == (uint64_t{1} << e) - 1) {
    const uint64_t payload = mantissa == 0 ? 0 : (mantissa << (52 - m)) | (uint64_t{1} << 51);
    return double_of(sign << 63 | uint64_t{0x7ff} << 52 | payload);
  }
  // A subnormal's exponent is that of the smallest normal, without the implicit leading one.
  const double magnitude = exponent == 0
      ? std::ldexp(static_cast<double>(mantissa), 1 - bias - m)
      : std::ldexp(static_cast<double>(mantissa | uint64_t{1} << m), static_cast<int>(exponent) - bias - m);
  return sign ? -magnitude : magnitude;
}

// `value` rounded to `format`, to nearest with ties to even, in integer arithmetic so that it
// does not depend on the floating-point environment. Rounding from double directly (not through
// float) avoids double rounding. A NaN stays a quiet NaN with its sign and leading payload bits.
uint64_t narrow(double value, Format format) {
  const int m = format.mantissa_bits, e = format.exponent_bits;
  const uint64_t bits = bits_of(value);
  const uint64_t sign = (bits >> 63) << (e + m);
  const int exponent = static_cast<int>(bits >> 52 & 0x7ff);
  const uint64_t mantissa = bits & ((uint64_t{1} << 52) - 1);
  const uint64_t infinity = sign | ((uint64_t{1} << e) - 1) << m;
  if (exponent == 0x7ff) {
    return mantissa == 0 ? infinity : infinity | uint64_t{1} << (m - 1) | mantissa >> (52 - m);
  }
  // Subnormal doubles lie far below half the smallest subnormal of every narrower format.
  if (exponent == 0) return sign;
  const int bias = (1 << (e - 1)) - 1;
  const int target_exponent = exponent - 1023 + bias;  // biased, in the narrower format
  if (target_exponent >= (1 << e) - 1) return infinity;
  const uint64_t significand = mantissa | uint64_t{1} << 52;  // 53 bits, leading one explicit
  // Bits of the significand to drop: more for a result that becomes subnormal.
  const int shift = 52 - m + (target_exponent >= 1 ? 0 : 1 - target_exponent);
  if (shift > 53) return sign;  // below half the smallest subnormal
  uint64_t kept = significand >> shift;
  const uint64_t rest = significand & ((uint64_t{1} << shift) - 1);
  const uint64_t half = uint64_t{1} << (shift - 1);
  if (rest > half || (rest == half && (kept & 1))) ++kept;
  // A carry out of the mantissa lands in the exponent field, which is the right result for both
  // a normal (next binade, or infinity) and a subnormal (the smallest normal).
  if (target_exponent >= 1) return sign | ((static_cast<uint64_t>(target_exponent - 1) << m) + kept);
  return sign | kept;
}

bool is_floating(Dtype dtype) {
  return dtype == Dtype::F64 || dtype == Dtype::F32 || dtype == Dtype::F16 || dtype == Dtype::BF16;
}

template <typename T>
T load(const unsigned char* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}
template <typename T>
void store(unsigned char* p, T value) {
  std::memcpy(p, &value, sizeof(T));
}

double load_as_double(Dtype dtype, const unsigned char* p) {
  switch (dtype) {
    case Dtype::F64: return load<double>(p);
    case Dtype::F32: return widen(load<uint32_t>(p), kF32);
    case Dtype::F16: return widen(load<uint16_t>(p), kF16);
    default: return widen(load<uint16_t>(p), kBF16);
  }
}

void store_from_double(Dtype dtype, unsigned char* p, double value) {
  switch (dtype) {
    case Dtype::F64: {
      // Quiet a NaN as the other targets do; everything else is already exact.
      uint64_t bits = bits_of(value);
      if ((bits >> 52 & 0x7ff) == 0x7ff && (bits & ((uint64_t{1} << 52) - 1))) bits |= uint64_t{1} << 51;
      store(p, bits);
      break;
    }
    case Dtype::F32: store(p, static_cast<uint32_t>(narrow(value, kF32))); break;
    case Dtype::F16: store(p, static_cast<uint16_t>(narrow(value, kF16))); break;
    default: store(p, static_cast<uint16_t>(narrow(value, kBF16))); break;
  }
}

// F32 -> BF16 is the conversion checkpoints and exports do in bulk; rounding the top half of the
// bits directly gives the same result as narrow() without leaving integer registers.
uint16_t f32_to_bf16(uint32_t bits) {
  if ((bits & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>(bits >> 16 | 0x40);
  return static_cast<uint16_t>((bits + 0x7fff + (bits >> 16 & 1)) >> 16);
}
uint32_t bf16_to_f32(uint16_t bits) {
  const bool nan = (bits & 0x7fff) > 0x7f80;
  return static_cast<uint32_t>(nan ? bits | 0x40 : bits) << 16;
}

}  // namespace

void convert(Dtype from, const void* src, Dtype to, void* dst, size_t count) {
  for (Dtype dtype : {from, to}) {
    if (!is_floating(dtype)) {
      throw std::invalid_argument(std::string("safetensors::convert: ") + dtype_name(dtype) +
                                  " is not a floating-point dtype (F64, F32, F16, BF16)");
    }
  }
  const auto* in = static_cast<const unsigned char*>(src);
  auto* out = static_cast<unsigned char*>(dst);
  const size_t in_size = dtype_size(from), out_size = dtype_size(to);
  if (from == Dtype::F32 && to == Dtype::BF16) {
    for (size_t i = 0; i < count; ++i) store(out + 2 * i, f32_to_bf16(load<uint32_t>(in + 4 * i)));
  } else if (from == Dtype::BF16 && to == Dtype::F32) {
    for (size_t i = 0; i < count; ++i) store(out + 4 * i, bf16_to_f32(load<uint16_t>(in + 2 * i)));
  } else {
    for (size_t i = 0; i < count; ++i) store_from_double(to, out + out_size * i, load_as_double(from, in + in_size * i));
  }
}

// ---- Writing ----

namespace {

// The JSON text of the header (unpadded). `where` starts every error message.
std::string header_json(const std::vector<TensorRef>& tensors, const std::map<std::string, std::string>& metadata,
                        const std::string& where) {
  auto invalid = [&](const std::string& what) { return std::invalid_argument(where + ": " + what); };
  auto quoted = [&](const std::string& text, const std::string& what) {
    try {
      return json(text).dump();
    } catch (const json::type_error&) {
      throw invalid(what + " " + quote(text) + " is not valid UTF-8");
    }
  };
  // nlohmann's objects sort their keys, and the header must keep the caller's order, so the
  // outer object is assembled by hand.
  std::string text = "{";
  if (!metadata.empty()) {
    text += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      text += (first ? "" : ",") + quoted(key, "metadata key") + ":" + quoted(value, "metadata value of " + quote(key));
      first = false;
    }
    text += "}";
  }
  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const TensorRef& tensor : tensors) {
    if (tensor.name == kMetadataKey) throw invalid("a tensor may not be named \"__metadata__\"");
    if (!names.insert(tensor.name).second) throw invalid("tensor " + quote(tensor.name) + " appears twice");
    for (size_t i = 0; i < tensor.shape.size(); ++i) {
      if (tensor.shape[i] < 0) {
        throw invalid("tensor " + quote(tensor.name) + ": shape " + shape_text(tensor.shape) + " has a negative dimension");
      }
    }
    const auto bytes = checked_nbytes(tensor.shape, tensor.dtype);
    if (!bytes || __builtin_add_overflow(offset, *bytes, &offset)) {
      throw invalid("tensor " + quote(tensor.name) + ": the byte count overflows 64 bits");
    }
    json shape = json::array();
    for (int64_t dim : tensor.shape) shape.push_back(dim);
    const json entry = {{"dtype", dtype_name(tensor.dtype)}, {"shape", shape},
                        {"data_offsets", {offset - *bytes, offset}}};
    text += (text.size() > 1 ? "," : "") + quoted(tensor.name, "tensor name") + ":" + entry.dump();
  }
  return text + "}";
}

std::string encode(const std::vector<TensorRef>& tensors, const std::map<std::string, std::string>& metadata,
                   const std::string& where) {
  std::string text = header_json(tensors, metadata, where);
  // Padding the JSON to a multiple of 8 starts the data section 8-aligned in the file.
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string header(8, '\0');
  for (int i = 0; i < 8; ++i) header[i] = static_cast<char>(static_cast<uint64_t>(text.size()) >> (8 * i));
  return header + text;
}

}  // namespace

std::string encode_header(const std::vector<TensorRef>& tensors, const std::map<std::string, std::string>& metadata) {
  return encode(tensors, metadata, "safetensors header");
}

void write_file(const std::string& path, const std::vector<TensorRef>& tensors,
                const std::map<std::string, std::string>& metadata, bool durable) {
  const std::string header = encode(tensors, metadata, path);
  for (const TensorRef& tensor : tensors) {
    if (tensor.data == nullptr && checked_nbytes(tensor.shape, tensor.dtype).value_or(0) > 0) {
      throw std::invalid_argument(path + ": tensor " + quote(tensor.name) + " has no data");
    }
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(path + ": cannot create: " + std::strerror(errno));
  // A half-written file is left as it is: the path may name something that is not ours to
  // remove (a device, another writer's file), and reading it fails naming the cut tensor.
  auto fail = [&](const char* what) {
    const int error = errno;
    ::close(fd);
    throw std::runtime_error(path + ": " + what + ": " + std::strerror(error));
  };
  auto write_all = [&](const void* data, uint64_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t written = ::write(fd, p, std::min<uint64_t>(size, uint64_t{1} << 30));
      if (written < 0) {
        if (errno == EINTR) continue;
        fail("cannot write");
      }
      p += written;
      size -= static_cast<uint64_t>(written);
    }
  };
  write_all(header.data(), header.size());
  for (const TensorRef& tensor : tensors) write_all(tensor.data, *checked_nbytes(tensor.shape, tensor.dtype));
  if (durable && ::fsync(fd) != 0) fail("cannot fsync");
  if (::close(fd) != 0) throw std::runtime_error(path + ": cannot close: " + std::strerror(errno));
}

}  // namespace lyre::safetensors
