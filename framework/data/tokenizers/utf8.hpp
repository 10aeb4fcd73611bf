// UTF-8 helpers the tokenizers share: character lengths that tolerate invalid input, lossy
// conversion to valid UTF-8 (U+FFFD per maximal invalid subpart, as HF and WHATWG decoders do),
// and GPT-2's byte <-> printable character table.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace lyre::tok {

// Length of the valid UTF-8 character starting at s[i], or 0 when the bytes there are not one.
inline size_t utf8_valid_len(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) { n = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
  else if (c >= 0xF0 && c <= 0xF4) { n = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
  else return 0;
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  return n;
}

// Length of the character at s[i]: a valid UTF-8 sequence, or one byte of invalid input.
inline size_t utf8_char_len(std::string_view s, size_t i) {
  const size_t n = utf8_valid_len(s, i);
  return n ? n : 1;
}

// Replaces invalid UTF-8 by U+FFFD, one per maximal subpart of an ill-formed sequence.
std::string utf8_lossy(std::string_view s);
bool utf8_is_valid(std::string_view s);
void utf8_append(std::string& out, uint32_t cp);

// GPT-2's bytes_to_unicode(): every byte as one printable character (as UTF-8 text).
const std::array<std::string, 256>& byte_to_char();
// The inverse: the byte of a byte-level character at s[i] (of length *len), or -1.
int char_to_byte(std::string_view s, size_t i, size_t* len);
// A byte-level token's characters back to the bytes they stand for; false (and *bytes
// unspecified) when a character is not one of the 256.
bool byte_level_to_bytes(std::string_view token, std::string* bytes);

}  // namespace lyre::tok
