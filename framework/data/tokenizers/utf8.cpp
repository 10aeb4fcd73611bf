#include "data/tokenizers/utf8.hpp"

namespace lyre::tok {

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = utf8_valid_len(s, i);
    if (n) {
      out.append(s.data() + i, n);
      i += n;
      continue;
    }
    // Maximal subpart: a lead byte followed by as many continuation bytes as stay well-formed.
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = 1;
    size_t want = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) want = 2;
    else if (c >= 0xE0 && c <= 0xEF) { want = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { want = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    while (want && len < want && i + len < s.size()) {
      const auto d = static_cast<unsigned char>(s[i + len]);
      if (d < lo || d > hi) break;
      lo = 0x80, hi = 0xBF;
      ++len;
    }
    out += "\xEF\xBF\xBD";
    i += len;
  }
  return out;
}

bool utf8_is_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_valid_len(s, i);
    if (!n) return false;
    i += n;
  }
  return true;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

namespace {
// GPT-2: printable Latin-1 bytes stand for themselves, the others are shifted past U+0100.
std::array<uint32_t, 256> byte_code_points() {
  std::array<uint32_t, 256> cps{};
  uint32_t n = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    cps[b] = printable ? b : 256 + n++;
  }
  return cps;
}
}  // namespace

const std::array<std::string, 256>& byte_to_char() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    const auto cps = byte_code_points();
    for (int b = 0; b < 256; ++b) utf8_append(t[b], cps[b]);
    return t;
  }();
  return table;
}

int char_to_byte(std::string_view s, size_t i, size_t* len) {
  // Byte-level characters are U+0021..U+0143: one or two UTF-8 bytes.
  static const std::array<int16_t, 0x144> inverse = [] {
    std::array<int16_t, 0x144> inv;
    inv.fill(-1);
    const auto cps = byte_code_points();
    for (int b = 0; b < 256; ++b) inv[cps[b]] = static_cast<int16_t>(b);
    return inv;
  }();
  const size_t n = utf8_valid_len(s, i);
  *len = n ? n : 1;
  uint32_t cp;
  if (n == 1) cp = static_cast<unsigned char>(s[i]);
  else if (n == 2) cp = ((static_cast<unsigned char>(s[i]) & 0x1F) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3F);
  else return -1;
  return cp < inverse.size() ? inverse[cp] : -1;
}

bool byte_level_to_bytes(std::string_view token, std::string* bytes) {
  bytes->clear();
  size_t len = 0;
  for (size_t i = 0; i < token.size(); i += len) {
    const int b = char_to_byte(token, i, &len);
    if (b < 0) return false;
    bytes->push_back(static_cast<char>(b));
  }
  return true;
}

}  // namespace lyre::tok
