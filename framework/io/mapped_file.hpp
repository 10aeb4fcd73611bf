// A read-only memory map of a whole file, released with the object. The data sources read their
// files through it so that opening a corpus of any size costs address space, not memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lyre {

class MappedFile {
 public:
  enum class Access { sequential, random, normal };  // madvise hints for the pages

  MappedFile() = default;
  // Maps `path`; an empty file gives size() == 0 and data() == nullptr. Errors
  // (std::runtime_error) name the file and the system's reason.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return data_; }
  size_t size() const { return size_; }
  // A hint only: sequential for a scan (read-ahead, pages may be dropped behind), random for
  // scattered small reads. Failures are ignored.
  void advise(Access access) const;

 private:
  const char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace lyre
