// Token strings and an open-addressing index from string to id: lookups by string_view with no
// allocation, which std::unordered_map<std::string, ...> cannot do in C++17.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lyre::tok {

inline uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a, then a final mix for the low bits
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 32);
}

class StringIndex {
 public:
  // Indexes keys[id] -> id for every non-empty key; a later duplicate keeps the first id.
  void build(const std::vector<std::string>& keys) {
    keys_ = &keys;
    size_t cap = 16;
    while (cap < keys.size() * 2) cap <<= 1;
    slots_.assign(cap, -1);
    for (size_t id = 0; id < keys.size(); ++id)
      if (!keys[id].empty() && find(keys[id]) < 0) insert(keys[id], static_cast<int32_t>(id));
  }
  int32_t find(std::string_view key) const {
    if (slots_.empty()) return -1;
    const size_t mask = slots_.size() - 1;
    for (size_t i = hash_bytes(key) & mask;; i = (i + 1) & mask) {
      const int32_t id = slots_[i];
      if (id < 0) return -1;
      if ((*keys_)[id] == key) return id;
    }
  }

 private:
  void insert(std::string_view key, int32_t id) {
    const size_t mask = slots_.size() - 1;
    size_t i = hash_bytes(key) & mask;
    while (slots_[i] >= 0) i = (i + 1) & mask;
    slots_[i] = id;
  }
  const std::vector<std::string>* keys_ = nullptr;
  std::vector<int32_t> slots_;
};

// (left id, right id) -> (rank, merged id), open addressing on the packed pair.
class MergeTable {
 public:
  struct Merge {
    int32_t rank, id;
  };
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    keys_.assign(cap, kEmpty);
    vals_.assign(cap, Merge{0, 0});
  }
  // False when the pair is already there (the first, lower rank wins, as in HF).
  bool insert(int32_t a, int32_t b, Merge m) {
    const uint64_t k = pack(a, b);
    const size_t mask = keys_.size() - 1;
    size_t i = mix(k) & mask;
    while (keys_[i] != kEmpty) {
      if (keys_[i] == k) return false;
      i = (i + 1) & mask;
    }
    keys_[i] = k;
    vals_[i] = m;
    return true;
  }
  const Merge* find(int32_t a, int32_t b) const {
    const uint64_t k = pack(a, b);
    const size_t mask = keys_.size() - 1;
    for (size_t i = mix(k) & mask;; i = (i + 1) & mask) {
      if (keys_[i] == k) return &vals_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  static uint64_t pack(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    return k ^ (k >> 33);
  }
  std::vector<uint64_t> keys_;
  std::vector<Merge> vals_;
};

}  // namespace lyre::tok
