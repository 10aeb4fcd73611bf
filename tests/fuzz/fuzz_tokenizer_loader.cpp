// libFuzzer: arbitrary bytes as a tokenizer.json. Loading either succeeds or throws a
// std::exception; a loaded tokenizer must then encode and decode anything without crashing.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>

#include "data/tokenizers/loaders.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::unique_ptr<lyre::Tokenizer> tok;
  try {
    tok = lyre::tok::load_tokenizer_json_text(text, "fuzz/tokenizer.json");
  } catch (const std::exception&) {
    return 0;
  }
  static const std::string_view samples[] = {
      "", "hello world", " the low lower", "<|endoftext|>a<s>b", "ab\xff\xfe\xc3", std::string_view("nul\0byte", 8),
      "\xe2\x96\x81 12345 \xef\xbc\xa1", "emoji \xf0\x9f\x98\x80 e\xcc\x81",
  };
  for (std::string_view s : samples) {
    try {
      const lyre::Encoding enc = tok->encode(s, true);
      if (enc.begin.size() != enc.ids.size() || enc.end.size() != enc.ids.size()) __builtin_trap();
      for (size_t k = 0; k < enc.ids.size(); ++k)
        if (enc.begin[k] > enc.end[k] || enc.end[k] > s.size()) __builtin_trap();
      (void)tok->decode(enc.ids);
      (void)tok->decode(enc.ids, true);
      (void)tok->encode_with_special(s);
    } catch (const std::exception&) {
      // Errors are allowed (a template id outside the vocabulary); crashes are not.
    }
  }
  return 0;
}
