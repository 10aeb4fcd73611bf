// Added tokens ("<|eot_id|>", "<s>") found in raw text before normalization, leftmost-longest
// as HF's AddedVocabulary does with Aho-Corasick, honouring lstrip/rstrip/single_word.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lyre::tok {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// A piece of the input: either an added token (id >= 0) or text for the model (id == -1).
struct Segment {
  size_t begin, end;
  int32_t id;
};

class AddedTokenMatcher {
 public:
  void build(const std::vector<AddedToken>& tokens);
  bool empty() const { return nodes_.size() <= 1; }
  // Cuts text into segments that cover it in order; text segments are never empty.
  void split(std::string_view text, std::vector<Segment>& out) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> next;  // sorted by byte
    int32_t token = -1;                                   // index into tokens_
  };
  int32_t child(int32_t node, unsigned char c) const;
  std::vector<Node> nodes_;
  std::vector<AddedToken> tokens_;
  bool first_byte_[256] = {};
};

}  // namespace lyre::tok
