// A PCRE2 pattern compiled for UTF-8 with Unicode properties and the JIT. Matching tolerates
// invalid UTF-8 (PCRE2_MATCH_INVALID_UTF): ill-formed bytes never match and are left between
// matches, so a split keeps every byte.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lyre::tok {

class Regex {
 public:
  // Throws std::runtime_error with PCRE2's message and the offset in the pattern.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All non-overlapping matches in text, as [begin, end) byte ranges, left to right.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lyre::tok
