#include "data/dataset.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include <spdlog/spdlog.h>

#include "data/token_file.hpp"

namespace lyre {
namespace {

// FNV-1a over 64-bit words: cheap, stable across platforms, enough to tell two data sets apart.
class Fingerprint {
 public:
  void add(uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      hash_ ^= (v >> (8 * i)) & 0xFF;
      hash_ *= 0x100000001B3ull;
    }
  }
  uint64_t value() const { return hash_; }

 private:
  uint64_t hash_ = 0xCBF29CE484222325ull;
};

// Bytes a cached sample costs: ids, trained flags, and the vectors themselves.
int64_t sample_bytes(const Sample& s) {
  return static_cast<int64_t>((s.ids.size() + s.rejected_ids.size()) * 5 + s.prompt.size() +
                              s.completion.size() + 128);
}

int64_t longest(const Sample& s) {
  return static_cast<int64_t>(std::max(s.ids.size(), s.rejected_ids.size()));
}

// One entry of a record dataset: window `window` of record `record` (0 unless split).
struct Entry {
  int64_t record;
  int32_t window;
  int32_t length;
};

class RecordDataset final : public Dataset {
 public:
  RecordDataset(const DatasetOptions& options, std::shared_ptr<const Tokenizer> tokenizer,
                std::shared_ptr<const ChatTemplate> chat_template)
      : options_(options),
        tokenizer_(std::move(tokenizer)),
        chat_template_(std::move(chat_template)),
        source_(open_record_source(options.source)),
        max_ids_(options.seq_len > 0 ? options.seq_len + 1 : 0) {
    if (options_.overlong == Overlong::split && source_->kind() != RecordKind::text)
      throw std::runtime_error(source_->path() + ": overlong \"split\" applies to text records only; these are " +
                               record_kind_name(source_->kind()) + " records (use \"truncate\" or \"drop\")");
    stats_.records = source_->size();
    stats_.skipped = source_->stats().skipped;
    tokenize_all();
    if (entries_.empty())
      throw std::runtime_error(source_->path() + ": no samples left: all " + std::to_string(stats_.records) +
                               " records were dropped as longer than seq_len " + std::to_string(options_.seq_len) +
                               " + 1 ids (overlong: \"drop\")");
    Fingerprint fp;
    fp.add(static_cast<uint64_t>(source_->kind()));
    fp.add(static_cast<uint64_t>(options_.seq_len));
    for (const Entry& e : entries_) fp.add(static_cast<uint64_t>(e.length));
    fingerprint_ = fp.value();
  }

  int64_t size() const override { return static_cast<int64_t>(entries_.size()); }
  int64_t length(int64_t index) const override { return entries_.at(static_cast<size_t>(index)).length; }
  RecordKind kind() const override { return source_->kind(); }
  const DatasetStats& stats() const override { return stats_; }
  const std::string& path() const override { return source_->path(); }
  uint64_t fingerprint() const override { return fingerprint_; }

  Sample sample(int64_t index) const override {
    const Entry& e = entries_.at(static_cast<size_t>(index));
    if (!cache_.empty()) return window(cache_[static_cast<size_t>(e.record)], e.window);
    return window(make(e.record), e.window);
  }

 private:
  Sample make(int64_t record) const {
    return make_sample(source_->read(record), *tokenizer_, chat_template_.get());
  }

  // Applies the over-long policy's cut to a whole sample.
  Sample window(const Sample& whole, int32_t w) const {
    if (max_ids_ == 0) return whole;
    Sample s = whole;
    if (options_.overlong == Overlong::split) {
      const size_t step = static_cast<size_t>(max_ids_ - 1), begin = step * static_cast<size_t>(w);
      const size_t end = std::min(whole.ids.size(), begin + static_cast<size_t>(max_ids_));
      s.ids.assign(whole.ids.begin() + begin, whole.ids.begin() + end);
      s.trained.assign(whole.trained.begin() + begin, whole.trained.begin() + end);
      return s;
    }
    auto cut = [&](std::vector<int32_t>& ids, std::vector<uint8_t>& trained) {
      if (ids.size() > static_cast<size_t>(max_ids_)) {
        ids.resize(static_cast<size_t>(max_ids_));
        trained.resize(static_cast<size_t>(max_ids_));
      }
    };
    cut(s.ids, s.trained);
    cut(s.rejected_ids, s.rejected_trained);
    return s;
  }

  // Tokenizes every record once (on all cores) to learn the lengths; keeps the samples while
  // they fit in cache_bytes.
  void tokenize_all() {
    const int64_t n = source_->size();
    std::vector<int64_t> lengths(static_cast<size_t>(n));
    // The cache's slots cost memory even empty: a data set whose slots alone exceed the budget
    // is never cached, so memory stays bounded by the per-record index.
    const bool cacheable = static_cast<int64_t>(sizeof(Sample)) * n <= options_.cache_bytes;
    std::vector<Sample> samples(cacheable ? static_cast<size_t>(n) : 0);
    std::atomic<int64_t> next{0}, cached_bytes{static_cast<int64_t>(sizeof(Sample)) * n};
    std::atomic<bool> keep{cacheable};
    std::exception_ptr failure;
    std::mutex failure_mutex;
    auto work = [&] {
      for (;;) {
        const int64_t begin = next.fetch_add(256);
        if (begin >= n) return;
        for (int64_t i = begin; i < std::min(n, begin + 256); ++i) {
          try {
            Sample s = make(i);
            lengths[static_cast<size_t>(i)] = longest(s);
            if (keep.load(std::memory_order_relaxed)) {
              if (cached_bytes.fetch_add(sample_bytes(s)) + sample_bytes(s) > options_.cache_bytes) keep = false;
              else samples[static_cast<size_t>(i)] = std::move(s);
            }
          } catch (...) {
            std::lock_guard<std::mutex> lock(failure_mutex);
            if (!failure) failure = std::current_exception();
            next = n;
            return;
          }
        }
      }
    };
    const unsigned threads = std::max(1u, std::min(8u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (std::thread& t : pool) t.join();
    if (failure) std::rethrow_exception(failure);
    if (keep) cache_ = std::move(samples);
    else spdlog::info("{}: tokenized samples exceed the {} MiB cache; they are re-tokenized on each use",
                      source_->path(), options_.cache_bytes >> 20);

    for (int64_t i = 0; i < n; ++i) {
      const int64_t len = lengths[static_cast<size_t>(i)];
      stats_.tokens += len;
      if (max_ids_ == 0 || len <= max_ids_) {
        entries_.push_back({i, 0, static_cast<int32_t>(len)});
        continue;
      }
      switch (options_.overlong) {
        case Overlong::truncate:
          ++stats_.truncated;
          entries_.push_back({i, 0, static_cast<int32_t>(max_ids_)});
          break;
        case Overlong::drop:
          ++stats_.dropped;
          break;
        case Overlong::split: {
          ++stats_.split;
          // Windows start every max_ids - 1 ids; one that would hold a single id predicts nothing.
          const int64_t step = max_ids_ - 1;
          for (int64_t w = 0; w * step + 1 < len; ++w)
            entries_.push_back({i, static_cast<int32_t>(w), static_cast<int32_t>(std::min(max_ids_, len - w * step))});
          break;
        }
      }
    }
  }

  DatasetOptions options_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  std::shared_ptr<const ChatTemplate> chat_template_;
  std::unique_ptr<RecordSource> source_;
  int64_t max_ids_;
  std::vector<Entry> entries_;
  std::vector<Sample> cache_;  // by record; empty when over the budget
  DatasetStats stats_;
  uint64_t fingerprint_ = 0;
};

// A pre-tokenized corpus cut into windows of seq_len + 1 ids that overlap by one id.
class TokenFileDataset final : public Dataset {
 public:
  TokenFileDataset(const DatasetOptions& options, const Tokenizer& tokenizer)
      : file_(TokenFile::open(options.source.path, resolve_token_dtype(options.source.path, options.token_dtype),
                              tokenizer.vocab_size())),
        path_(options.source.path),
        seq_len_(options.seq_len),
        eos_(options.document_masking ? tokenizer.info().eos_id : -1) {
    if (seq_len_ < 1) throw std::runtime_error(path_ + ": token files need seq_len >= 1");
    const int64_t n = file_.num_tokens();
    windows_ = n > 1 ? (n - 2) / seq_len_ + 1 : 0;
    if (windows_ == 0) throw std::runtime_error(path_ + ": " + std::to_string(n) + " token(s): nothing to train on");
    stats_.records = windows_;
    stats_.tokens = n;
    Fingerprint fp;
    fp.add(static_cast<uint64_t>(n));
    fp.add(static_cast<uint64_t>(seq_len_));
    fp.add(static_cast<uint64_t>(eos_ + 1));
    fingerprint_ = fp.value();
  }

  int64_t size() const override { return windows_; }
  int64_t length(int64_t index) const override {
    return std::min(seq_len_ + 1, file_.num_tokens() - index * seq_len_);
  }
  RecordKind kind() const override { return RecordKind::text; }
  const DatasetStats& stats() const override { return stats_; }
  const std::string& path() const override { return path_; }
  uint64_t fingerprint() const override { return fingerprint_; }

  Sample sample(int64_t index) const override {
    if (index < 0 || index >= windows_) throw std::out_of_range(path_ + ": window " + std::to_string(index) + " out of range");
    Sample s;
    s.ids.resize(static_cast<size_t>(length(index)));
    file_.read(index * seq_len_, static_cast<int64_t>(s.ids.size()), s.ids.data());
    s.trained.assign(s.ids.size(), 1);
    if (eos_ >= 0)
      for (size_t k = 1; k < s.ids.size(); ++k)
        if (s.ids[k - 1] == eos_) s.doc_starts.push_back(static_cast<int32_t>(k));
    return s;
  }

 private:
  TokenFile file_;
  std::string path_;
  int64_t seq_len_;
  int32_t eos_;
  int64_t windows_ = 0;
  DatasetStats stats_;
  uint64_t fingerprint_ = 0;
};

class MemoryDataset final : public Dataset {
 public:
  MemoryDataset(std::vector<Sample> samples, RecordKind kind, std::string name)
      : samples_(std::move(samples)), kind_(kind), name_(std::move(name)) {
    Fingerprint fp;
    for (const Sample& s : samples_) {
      fp.add(static_cast<uint64_t>(longest(s)));
      stats_.tokens += longest(s);
    }
    stats_.records = size();
    fingerprint_ = fp.value();
  }
  int64_t size() const override { return static_cast<int64_t>(samples_.size()); }
  Sample sample(int64_t index) const override { return samples_.at(static_cast<size_t>(index)); }
  int64_t length(int64_t index) const override { return longest(samples_.at(static_cast<size_t>(index))); }
  RecordKind kind() const override { return kind_; }
  const DatasetStats& stats() const override { return stats_; }
  const std::string& path() const override { return name_; }
  uint64_t fingerprint() const override { return fingerprint_; }

 private:
  std::vector<Sample> samples_;
  RecordKind kind_;
  std::string name_;
  DatasetStats stats_;
  uint64_t fingerprint_ = 0;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Overlong parse_overlong(const std::string& name) {
  if (name == "truncate") return Overlong::truncate;
  if (name == "drop") return Overlong::drop;
  if (name == "split") return Overlong::split;
  throw std::invalid_argument("overlong must be \"truncate\", \"drop\" or \"split\", got \"" + name + "\"");
}

std::shared_ptr<const Dataset> open_dataset(const DatasetOptions& options, std::shared_ptr<const Tokenizer> tokenizer,
                                            std::shared_ptr<const ChatTemplate> chat_template) {
  if (!tokenizer) throw std::invalid_argument("open_dataset: tokenizer is null");
  std::string format = options.source.format;
  if (format == "auto") {
    const std::string& p = options.source.path;
    if (ends_with(p, ".u16") || ends_with(p, ".u32") || ends_with(p, ".bin") || !options.token_dtype.empty())
      format = "tokens";
  }
  if (format == "tokens") return std::make_shared<TokenFileDataset>(options, *tokenizer);
  return std::make_shared<RecordDataset>(options, std::move(tokenizer), std::move(chat_template));
}

std::shared_ptr<const Dataset> make_memory_dataset(std::vector<Sample> samples, RecordKind kind, std::string name) {
  if (samples.empty()) throw std::runtime_error(name + ": no samples");
  return std::make_shared<MemoryDataset>(std::move(samples), kind, std::move(name));
}

}  // namespace lyre
