// An integer read from JSON, or nothing when the value is not an integer an int64 holds (a
// float, a string, an unsigned above 2^63 - 1). Call it before any get<integer>(): nlohmann
// converts a float such as 3e20 to an integer without a check, which is undefined behaviour,
// not an error. The caller names the file and key in its own message.
#pragma once

#include <cstdint>
#include <optional>

#include <nlohmann/json.hpp>

namespace lyre {

inline std::optional<int64_t> json_int64(const nlohmann::json& v) {
  if (!v.is_number_integer()) return std::nullopt;
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
  return v.get<int64_t>();
}

}  // namespace lyre
