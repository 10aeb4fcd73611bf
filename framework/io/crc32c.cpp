// CRC-32C (Castagnoli), reflected polynomial 0x82f63b78, as TFRecord framing uses it. A 256-entry
// table built at compile time: event records are tens of bytes, so hardware CRC (SSE4.2) or
// slicing would save nanoseconds per log line and add a CPU-feature branch to test.
#include "io/tensorboard.hpp"

#include <array>

namespace lyre {
namespace {

constexpr uint32_t kPolynomial = 0x82f63b78u;

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t byte = 0; byte < 256; ++byte) {
    uint32_t crc = byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? kPolynomial : 0u);
    table[byte] = crc;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kTable = make_table();

}  // namespace

// `crc` is a previous result, so crc32c(b, crc32c(a)) == crc32c(a followed by b).
uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
  for (size_t i = 0; i < size; ++i) c = kTable[(c ^ p[i]) & 0xffu] ^ (c >> 8);
  return ~c;
}

// TFRecord stores CRCs rotated and offset, because a CRC computed over data that itself holds
// CRCs is weak; the constant is the format's.
uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

}  // namespace lyre
