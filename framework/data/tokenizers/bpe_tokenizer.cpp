#include "data/tokenizers/bpe_tokenizer.hpp"

#include <unicode/bytestream.h>
#include <unicode/edits.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <queue>
#include <stdexcept>

#include "data/tokenizers/utf8.hpp"

namespace lyre::tok {

namespace {

constexpr size_t kMaxCachedWord = 256;    // bytes; longer pre-tokens are rare and not worth keeping
constexpr size_t kMaxCacheEntries = 1 << 16;
constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // U+2581

// A string being normalized, with the segment-relative source range of each of its bytes.
// An empty `from` means the identity (no edit yet), the common case kept allocation-free.
struct Aligned {
  std::string text;
  std::vector<uint32_t> from_begin, from_end;
};

// Builds a new Aligned from pieces of an old one: copies keep their ranges, replacements take the
// range of what they replace, insertions get an empty range where they stand.
class Rewriter {
 public:
  Rewriter(std::string_view src, const Aligned* old, bool track) : src_(src), old_(old), track_(track) {
    out_.text.reserve(src.size() + 8);
  }
  void copy(size_t b, size_t e) {
    out_.text.append(src_.data() + b, e - b);
    if (!track_) return;
    for (size_t i = b; i < e; ++i) {
      out_.from_begin.push_back(begin_of(i));
      out_.from_end.push_back(end_of(i));
    }
  }
  void replace(std::string_view with, size_t b, size_t e) {
    out_.text.append(with);
    if (!track_) return;
    const uint32_t fb = b < e ? begin_of(b) : at(b), fe = b < e ? end_of(e - 1) : at(b);
    for (size_t i = 0; i < with.size(); ++i) {
      out_.from_begin.push_back(fb);
      out_.from_end.push_back(fe);
    }
  }
  Aligned take() { return std::move(out_); }

 private:
  uint32_t begin_of(size_t i) const { return old_ && !old_->from_begin.empty() ? old_->from_begin[i] : static_cast<uint32_t>(i); }
  uint32_t end_of(size_t i) const { return old_ && !old_->from_end.empty() ? old_->from_end[i] : static_cast<uint32_t>(i + 1); }
  uint32_t at(size_t i) const {
    if (i < src_.size()) return begin_of(i);
    return src_.empty() ? 0 : end_of(src_.size() - 1);
  }
  std::string_view src_;
  const Aligned* old_;
  bool track_;
  Aligned out_;
};

const icu::Normalizer2* icu_normalizer(NormalizerStep::Kind kind) {
  UErrorCode ec = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (kind) {
    case NormalizerStep::Kind::NFC: n = icu::Normalizer2::getNFCInstance(ec); break;
    case NormalizerStep::Kind::NFKC: n = icu::Normalizer2::getNFKCInstance(ec); break;
    case NormalizerStep::Kind::NFD: n = icu::Normalizer2::getNFDInstance(ec); break;
    default: n = icu::Normalizer2::getNFKDInstance(ec); break;
  }
  if (U_FAILURE(ec) || !n) throw std::runtime_error(std::string("ICU normalizer unavailable: ") + u_errorName(ec));
  return n;
}

// Unicode normalization of the valid UTF-8 runs; invalid bytes pass through untouched.
void unicode_normalize(const icu::Normalizer2* norm, std::string_view src, Rewriter& w) {
  size_t i = 0;
  while (i < src.size()) {
    size_t j = i;
    while (j < src.size() && utf8_valid_len(src, j)) j += utf8_valid_len(src, j);
    if (j > i) {
      const icu::StringPiece run(src.data() + i, static_cast<int32_t>(j - i));
      UErrorCode ec = U_ZERO_ERROR;
      if (norm->isNormalizedUTF8(run, ec) && U_SUCCESS(ec)) {
        w.copy(i, j);
      } else {
        std::string out;
        icu::StringByteSink<std::string> sink(&out);
        icu::Edits edits;
        ec = U_ZERO_ERROR;
        norm->normalizeUTF8(0, run, sink, &edits, ec);
        if (U_FAILURE(ec)) {
          w.copy(i, j);
        } else {
          icu::Edits::Iterator it = edits.getFineIterator();
          while (it.next(ec) && U_SUCCESS(ec)) {
            const size_t sb = i + static_cast<size_t>(it.sourceIndex());
            const size_t se = sb + static_cast<size_t>(it.oldLength());
            if (!it.hasChange()) {
              w.copy(sb, se);
            } else {
              w.replace(std::string_view(out).substr(static_cast<size_t>(it.destinationIndex()),
                                                     static_cast<size_t>(it.newLength())),
                        sb, se);
            }
          }
        }
      }
      i = j;
    }
    if (i < src.size() && !utf8_valid_len(src, i)) {
      w.copy(i, i + 1);
      ++i;
    }
  }
}

void replace_all(std::string_view src, const NormalizerStep& step, Rewriter& w) {
  size_t pos = 0;
  if (step.regex) {
    std::vector<std::pair<size_t, size_t>> m;
    step.regex->find_all(src, m);
    for (auto [b, e] : m) {
      w.copy(pos, b);
      w.replace(step.to, b, e);
      pos = e;
    }
  } else if (!step.from.empty()) {
    for (size_t f; (f = src.find(step.from, pos)) != std::string_view::npos; pos = f + step.from.size()) {
      w.copy(pos, f);
      w.replace(step.to, f, f + step.from.size());
    }
  }
  w.copy(pos, src.size());
}

// HF's split(): tags each range as match or not, then merges by the behaviour.
void apply_split(const SplitStep& step, std::string_view text, size_t b, size_t e,
                 std::vector<std::pair<size_t, size_t>>& out, std::vector<std::pair<size_t, size_t>>& scratch) {
  scratch.clear();
  const std::string_view sub = text.substr(b, e - b);
  if (step.regex) {
    step.regex->find_all(sub, scratch);
  } else if (!step.literal.empty()) {
    for (size_t p = 0, f; (f = sub.find(step.literal, p)) != std::string_view::npos; p = f + step.literal.size())
      scratch.emplace_back(f, f + step.literal.size());
  }
  struct Part {
    size_t b, e;
    bool match;
  };
  std::vector<Part> parts;
  parts.reserve(scratch.size() * 2 + 1);
  size_t pos = 0;
  for (auto [mb, me] : scratch) {
    if (mb > pos) parts.push_back({b + pos, b + mb, step.invert});
    parts.push_back({b + mb, b + me, !step.invert});
    pos = me;
  }
  if (pos < sub.size()) parts.push_back({b + pos, e, step.invert});

  using B = SplitStep::Behavior;
  switch (step.behavior) {
    case B::Removed:
      for (const Part& p : parts)
        if (!p.match) out.emplace_back(p.b, p.e);
      break;
    case B::Isolated:
      for (const Part& p : parts) out.emplace_back(p.b, p.e);
      break;
    case B::MergedWithPrevious: {
      const size_t first = out.size();
      bool prev_match = false;
      for (const Part& p : parts) {
        if (p.match && !prev_match && out.size() > first) out.back().second = p.e;
        else out.emplace_back(p.b, p.e);
        prev_match = p.match;
      }
      break;
    }
    case B::MergedWithNext: {
      std::vector<std::pair<size_t, size_t>> rev;
      bool prev_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->match && !prev_match && !rev.empty()) rev.back().first = it->b;
        else rev.emplace_back(it->b, it->e);
        prev_match = it->match;
      }
      out.insert(out.end(), rev.rbegin(), rev.rend());
      break;
    }
    case B::Contiguous: {
      const size_t first = out.size();
      bool prev_match = false;
      for (const Part& p : parts) {
        if (p.match == prev_match && out.size() > first) out.back().second = p.e;
        else out.emplace_back(p.b, p.e);
        prev_match = p.match;
      }
      break;
    }
  }
}

// Expands [b, e) to whole characters of valid UTF-8 text, for tokens that hold part of one.
uint32_t char_begin(std::string_view s, uint32_t i) {
  const auto cont = [&](size_t k) { return (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80; };
  if (i >= s.size() || !cont(i)) return i;
  for (uint32_t back = 1; back <= 3 && back <= i; ++back) {
    const size_t start = i - back;
    if (!cont(start)) return utf8_valid_len(s, start) > back ? static_cast<uint32_t>(start) : i;
  }
  return i;
}

uint32_t char_end(std::string_view s, uint32_t e) {
  if (e == 0 || e >= s.size()) return e;
  const uint32_t b = char_begin(s, e);
  if (b == e) return e;
  return static_cast<uint32_t>(b + utf8_valid_len(s, b));
}

}  // namespace

BpeTokenizer::BpeTokenizer(BpeConfig config) : config_(std::move(config)) {
  info_.source = config_.source;
  info_.kind = config_.kind;
  info_.unk_id = config_.unk_id;
  // Added tokens may extend the vocabulary past the model's ids.
  for (const AddedToken& t : config_.added) {
    if (t.id < 0) throw std::runtime_error(config_.source + ": added token \"" + t.content + "\" has a negative id");
    if (static_cast<size_t>(t.id) >= vocab_.size()) vocab_.resize(static_cast<size_t>(t.id) + 1);
    if (vocab_[t.id].empty()) vocab_[t.id] = t.content;
  }
  by_token_.build(vocab_);
  special_.assign(vocab_.size(), 0);
  for (const AddedToken& t : config_.added) {
    if (t.special) special_[t.id] = 1;
    added_by_content_.emplace(t.content, t.id);
  }
  matcher_.build(config_.added);

  if (config_.byte_level) {
    raw_.resize(vocab_.size());
    for (size_t id = 0; id < vocab_.size(); ++id) {
      std::string raw;
      if (byte_level_to_bytes(vocab_[id], &raw)) raw_[id] = std::move(raw);
    }
    by_raw_.build(raw_);
    for (int b = 0; b < 256; ++b) byte_id_[b] = by_token_.find(byte_to_char()[b]);
  }
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const char tok[] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
    fallback_id_[b] = by_token_.find(tok);
  }
  for (int c = 0; c < 128; ++c) ascii_id_[c] = by_token_.find(std::string(1, static_cast<char>(c)));

  merges_.reserve(config_.merges.size());
  for (size_t rank = 0; rank < config_.merges.size(); ++rank) {
    const auto& [a, b] = config_.merges[rank];
    const int32_t ia = by_token_.find(a), ib = by_token_.find(b);
    const int32_t im = by_token_.find(a + b);
    if (ia < 0 || ib < 0 || im < 0)
      throw std::runtime_error(config_.source + ": merge " + std::to_string(rank) + " \"" + a + " " + b +
                               "\" names a token not in the vocabulary (\"" + (ia < 0 ? a : ib < 0 ? b : a + b) +
                               "\")");
    merges_.insert(ia, ib, {static_cast<int32_t>(rank), im});
  }
  config_.merges.clear();
  config_.merges.shrink_to_fit();

  if (!config_.byte_level && config_.splits.empty() && by_token_.find(kMetaspace) >= 0) {
    cut_before_metaspace_ = true;
    for (const std::string& t : vocab_)
      for (size_t pos = t.find(kMetaspace, 1); pos != std::string::npos; pos = t.find(kMetaspace, pos + 1))
        if (pos < 3 || t.compare(pos - 3, 3, kMetaspace) != 0) cut_before_metaspace_ = false;
  }
}

std::optional<int32_t> BpeTokenizer::token_to_id(std::string_view token) const {
  const auto it = added_by_content_.find(std::string(token));
  if (it != added_by_content_.end()) return it->second;
  const int32_t id = by_token_.find(token);
  if (id < 0) return std::nullopt;
  return id;
}

std::string BpeTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw std::out_of_range(config_.source + ": token id " + std::to_string(id) + " is outside [0, " +
                            std::to_string(vocab_size()) + ")");
  return vocab_[id];
}

bool BpeTokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < special_.size() && special_[id];
}

Encoding BpeTokenizer::encode(std::string_view text, bool with_offsets) const {
  Encoding enc;
  enc.ids.reserve(text.size() / 3 + 4);
  std::vector<Segment> segments;
  if (matcher_.empty()) {
    if (!text.empty()) segments.push_back({0, text.size(), -1});
  } else {
    matcher_.split(text, segments);
  }
  for (const Segment& s : segments) {
    if (s.id >= 0) {
      enc.ids.push_back(s.id);
      if (with_offsets) {
        enc.begin.push_back(static_cast<uint32_t>(s.begin));
        enc.end.push_back(static_cast<uint32_t>(s.end));
      }
    } else {
      const size_t before = enc.ids.size();
      encode_segment(text.substr(s.begin, s.end - s.begin), s.begin, with_offsets, enc);
      if (with_offsets)
        for (size_t k = before; k < enc.ids.size(); ++k) {
          enc.begin[k] += static_cast<uint32_t>(s.begin);
          enc.end[k] += static_cast<uint32_t>(s.begin);
        }
    }
  }
  if (with_offsets)
    for (size_t k = 0; k < enc.ids.size(); ++k) {
      if (enc.begin[k] == enc.end[k]) continue;
      enc.begin[k] = char_begin(text, enc.begin[k]);
      enc.end[k] = char_end(text, enc.end[k]);
    }
  return enc;
}

void BpeTokenizer::encode_segment(std::string_view seg, size_t seg_begin, bool with_offsets, Encoding& out) const {
  Aligned cur;
  bool edited = false;
  for (const NormalizerStep& step : config_.normalizers) {
    const std::string_view src = edited ? std::string_view(cur.text) : seg;
    Rewriter w(src, edited ? &cur : nullptr, with_offsets);
    using K = NormalizerStep::Kind;
    switch (step.kind) {
      case K::NFC: case K::NFKC: case K::NFD: case K::NFKD:
        unicode_normalize(icu_normalizer(step.kind), src, w);
        break;
      case K::Replace:
        replace_all(src, step, w);
        break;
      case K::Prepend:
        if (!src.empty()) w.replace(step.to, 0, 0);
        w.copy(0, src.size());
        break;
      case K::MetaspaceEdit: {
        NormalizerStep spaces(K::Replace);
        spaces.from = " ";
        spaces.to = step.from;
        Rewriter r(src, edited ? &cur : nullptr, with_offsets);
        replace_all(src, spaces, r);
        Aligned replaced = r.take();
        const bool starts = replaced.text.compare(0, step.from.size(), step.from) == 0;
        Rewriter p(replaced.text, &replaced, with_offsets);
        if (step.prepend && !starts && !replaced.text.empty() && (!step.first_only || seg_begin == 0))
          p.replace(step.from, 0, 0);
        p.copy(0, replaced.text.size());
        cur = p.take();
        edited = true;
        continue;
      }
      case K::PrefixSpace:
        if (!src.empty() && src[0] != ' ') w.replace(" ", 0, 0);
        w.copy(0, src.size());
        break;
    }
    cur = w.take();
    edited = true;
  }
  const std::string_view norm = edited ? std::string_view(cur.text) : seg;
  if (norm.empty()) return;

  std::vector<std::pair<size_t, size_t>> words{{0, norm.size()}}, next, scratch;
  for (const SplitStep& step : config_.splits) {
    next.clear();
    for (auto [b, e] : words) apply_split(step, norm, b, e, next, scratch);
    words.swap(next);
  }
  if (cut_before_metaspace_) {
    words.clear();
    size_t start = 0;
    for (size_t pos = norm.find(kMetaspace, 1); pos != std::string_view::npos; pos = norm.find(kMetaspace, pos + 1)) {
      if (pos - start >= 3 && norm.compare(pos - 3, 3, kMetaspace) != 0) {
        words.emplace_back(start, pos);
        start = pos;
      }
    }
    words.emplace_back(start, norm.size());
  }

  std::vector<Piece> pieces;
  for (auto [b, e] : words) {
    if (b == e) continue;
    pieces.clear();
    bpe_word(norm.substr(b, e - b), pieces);
    size_t pos = b;
    for (const Piece& p : pieces) {
      out.ids.push_back(p.id);
      if (with_offsets) {
        const size_t pe = pos + p.len;
        if (edited) {
          out.begin.push_back(cur.from_begin[pos]);
          out.end.push_back(std::max(cur.from_begin[pos], cur.from_end[pe - 1]));
        } else {
          out.begin.push_back(static_cast<uint32_t>(pos));
          out.end.push_back(static_cast<uint32_t>(pe));
        }
      }
      pos += p.len;
    }
  }
}

void BpeTokenizer::bpe_word(std::string_view word, std::vector<Piece>& out) const {
  const bool cacheable = word.size() <= kMaxCachedWord;
  thread_local std::string key;
  if (cacheable) {
    key.assign(word.data(), word.size());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(key);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<Piece> syms;
  syms.reserve(word.size());
  if (config_.byte_level) {
    const int32_t whole = config_.ignore_merges ? by_raw_.find(word) : -1;
    if (whole >= 0) {
      syms.push_back({whole, static_cast<uint32_t>(word.size())});
    } else {
      for (unsigned char c : word) {
        const int32_t id = byte_id_[c] >= 0 ? byte_id_[c] : config_.unk_id;
        if (id >= 0) syms.push_back({id, 1});
      }
      merge_symbols(syms);
    }
  } else {
    const int32_t whole = config_.ignore_merges ? by_token_.find(word) : -1;
    if (whole >= 0) {
      syms.push_back({whole, static_cast<uint32_t>(word.size())});
    } else {
      for (size_t i = 0; i < word.size();) {
        const size_t n = utf8_char_len(word, i);
        const auto c0 = static_cast<unsigned char>(word[i]);
        int32_t id = n == 1 && c0 < 128 ? ascii_id_[c0] : by_token_.find(word.substr(i, n));
        if (id < 0 && config_.byte_fallback) {
          bool all = true;
          for (size_t k = 0; k < n; ++k) all = all && fallback_id_[static_cast<unsigned char>(word[i + k])] >= 0;
          if (all) {
            for (size_t k = 0; k < n; ++k) syms.push_back({fallback_id_[static_cast<unsigned char>(word[i + k])], 1});
            i += n;
            continue;
          }
        }
        if (id < 0) id = config_.unk_id;
        if (id >= 0) {
          if (id == config_.unk_id && config_.fuse_unk && !syms.empty() && syms.back().id == id)
            syms.back().len += static_cast<uint32_t>(n);
          else
            syms.push_back({id, static_cast<uint32_t>(n)});
        }
        // else: HF drops a character it has no token for when the model has no unk_token.
        i += n;
      }
      merge_symbols(syms);
    }
  }
  out.insert(out.end(), syms.begin(), syms.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(key, std::move(syms));
  }
}

// Applies merges lowest rank first, leftmost first among equal ranks (HF's BinaryHeap order).
// Short words scan their pair ranks; long ones (Metaspace models see whole lines) use a heap.
void BpeTokenizer::merge_symbols(std::vector<Piece>& syms) const {
  const size_t n = syms.size();
  if (n < 2) return;
  constexpr int32_t kNone = INT32_MAX;
  if (n <= 64) {
    int32_t rank[64], merged[64];
    size_t count = n;
    for (size_t i = 0; i + 1 < count; ++i) {
      const auto* m = merges_.find(syms[i].id, syms[i + 1].id);
      rank[i] = m ? m->rank : kNone;
      merged[i] = m ? m->id : -1;
    }
    while (count > 1) {
      size_t best = 0;
      for (size_t i = 1; i + 1 < count; ++i)
        if (rank[i] < rank[best]) best = i;
      if (rank[best] == kNone) break;
      syms[best].id = merged[best];
      syms[best].len += syms[best + 1].len;
      for (size_t i = best + 1; i + 1 < count; ++i) {
        syms[i] = syms[i + 1];
        rank[i] = rank[i + 1];
        merged[i] = merged[i + 1];
      }
      --count;
      // Only the pairs either side of the merged symbol changed.
      for (size_t i = best > 0 ? best - 1 : best; i <= best && i + 1 < count; ++i) {
        const auto* m = merges_.find(syms[i].id, syms[i + 1].id);
        rank[i] = m ? m->rank : kNone;
        merged[i] = m ? m->id : -1;
      }
    }
    syms.resize(count);
    return;
  }

  std::vector<int32_t> prev(n), next(n);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  struct Cand {
    int32_t rank, pos, left, right, merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int32_t i) {
    const int32_t j = next[i];
    if (i < 0 || j < 0) return;
    if (const auto* m = merges_.find(syms[i].id, syms[j].id)) heap.push({m->rank, i, syms[i].id, syms[j].id, m->id});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  std::vector<uint8_t> alive(n, 1);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    const int32_t i = c.pos, j = next[i];
    if (!alive[i] || j < 0 || syms[i].id != c.left || syms[j].id != c.right) continue;
    syms[i].id = c.merged;
    syms[i].len += syms[j].len;
    alive[j] = 0;
    next[i] = next[j];
    if (next[j] >= 0) prev[next[j]] = i;
    if (prev[i] >= 0) push(prev[i]);
    push(i);
  }
  size_t w = 0;
  for (size_t i = 0; i < n; ++i)
    if (alive[i]) syms[w++] = syms[i];
  syms.resize(w);
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size())
      throw std::out_of_range(config_.source + ": cannot decode token id " + std::to_string(id) +
                              ", outside [0, " + std::to_string(vocab_size()) + ")");
    if (skip_special && special_[id]) continue;
    tokens.push_back(vocab_[id]);
  }
  if (!config_.has_decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  using K = DecoderStep::Kind;
  for (const DecoderStep& d : config_.decoders) {
    switch (d.kind) {
      case K::ByteLevel: {
        std::string bytes;
        std::string raw;
        for (const std::string& t : tokens) bytes += byte_level_to_bytes(t, &raw) ? raw : t;
        tokens.assign(1, utf8_lossy(bytes));
        break;
      }
      case K::Replace:
        for (std::string& t : tokens) {
          if (d.from.empty()) continue;
          std::string r;
          size_t pos = 0;
          for (size_t f; (f = t.find(d.from, pos)) != std::string::npos; pos = f + d.from.size())
            r.append(t, pos, f - pos).append(d.to);
          r.append(t, pos, std::string::npos);
          t = std::move(r);
        }
        break;
      case K::Metaspace:
        for (size_t k = 0; k < tokens.size(); ++k) {
          std::string r;
          std::string& t = tokens[k];
          size_t pos = 0;
          for (size_t f; (f = t.find(d.from, pos)) != std::string::npos; pos = f + d.from.size())
            r.append(t, pos, f - pos).append(" ");
          r.append(t, pos, std::string::npos);
          if (k == 0 && d.strip_first_space && !r.empty() && r[0] == ' ') r.erase(0, 1);
          t = std::move(r);
        }
        break;
      case K::ByteFallback: {
        std::vector<std::string> out;
        std::string pending;
        size_t pending_count = 0;
        auto flush = [&] {
          if (!pending_count) return;
          if (utf8_is_valid(pending)) {
            out.push_back(pending);
          } else {
            for (size_t k = 0; k < pending_count; ++k) out.emplace_back("\xEF\xBF\xBD");
          }
          pending.clear();
          pending_count = 0;
        };
        for (std::string& t : tokens) {
          if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
              std::isxdigit(static_cast<unsigned char>(t[4]))) {
            pending += static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16));
            ++pending_count;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case K::Fuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case K::Strip:
        for (std::string& t : tokens) {
          size_t b = 0, e = t.size();
          for (int k = 0; k < d.start && t.compare(b, d.from.size(), d.from) == 0 && b + d.from.size() <= e; ++k)
            b += d.from.size();
          for (int k = 0; k < d.stop && e >= b + d.from.size() && t.compare(e - d.from.size(), d.from.size(), d.from) == 0; ++k)
            e -= d.from.size();
          t = t.substr(b, e - b);
        }
        break;
    }
  }
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace lyre::tok
