#include "data/tokenizers/added_tokens.hpp"

#include <algorithm>

namespace lyre::tok {

namespace {
bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool is_word(unsigned char c) { return c == '_' || c >= 0x80 || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'); }
}  // namespace

int32_t AddedTokenMatcher::child(int32_t node, unsigned char c) const {
  const auto& next = nodes_[node].next;
  auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(c, int32_t{-1}));
  return it != next.end() && it->first == c ? it->second : -1;
}

void AddedTokenMatcher::build(const std::vector<AddedToken>& tokens) {
  tokens_ = tokens;
  nodes_.assign(1, Node{});
  std::fill(std::begin(first_byte_), std::end(first_byte_), false);
  for (size_t t = 0; t < tokens_.size(); ++t) {
    const std::string& s = tokens_[t].content;
    if (s.empty()) continue;
    first_byte_[static_cast<unsigned char>(s[0])] = true;
    int32_t node = 0;
    for (unsigned char c : s) {
      int32_t next = child(node, c);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_.push_back(Node{});
        auto& edges = nodes_[node].next;
        edges.insert(std::lower_bound(edges.begin(), edges.end(), std::make_pair(c, int32_t{-1})),
                     std::make_pair(c, next));
      }
      node = next;
    }
    if (nodes_[node].token < 0) nodes_[node].token = static_cast<int32_t>(t);
  }
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Segment>& out) const {
  size_t text_start = 0;  // start of the pending text segment
  size_t i = 0;
  while (i < text.size()) {
    if (!first_byte_[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    int32_t node = 0, found = -1;
    size_t found_end = 0;
    for (size_t j = i; j < text.size(); ++j) {
      node = child(node, static_cast<unsigned char>(text[j]));
      if (node < 0) break;
      if (nodes_[node].token >= 0) found = nodes_[node].token, found_end = j + 1;
    }
    if (found < 0) {
      ++i;
      continue;
    }
    const AddedToken& tok = tokens_[found];
    if (tok.single_word && ((i > 0 && is_word(static_cast<unsigned char>(text[i - 1]))) ||
                            (found_end < text.size() && is_word(static_cast<unsigned char>(text[found_end]))))) {
      ++i;
      continue;
    }
    size_t b = i, e = found_end;
    if (tok.lstrip)
      while (b > text_start && is_space(static_cast<unsigned char>(text[b - 1]))) --b;
    if (tok.rstrip)
      while (e < text.size() && is_space(static_cast<unsigned char>(text[e]))) ++e;
    if (b > text_start) out.push_back({text_start, b, -1});
    out.push_back({b, e, tok.id});
    i = text_start = e;
  }
  if (text_start < text.size()) out.push_back({text_start, text.size(), -1});
}

}  // namespace lyre::tok
