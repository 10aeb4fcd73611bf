// POSIX file primitives for writes that must survive a crash or a power cut: data reaches the
// disk (fsync) before the rename that makes it visible, and the rename itself is made durable by
// an fsync of the directory. Every failure throws std::runtime_error naming the path and the
// system's reason.
#pragma once

#include <cstddef>
#include <string>
#include <utility>

namespace lyre::ckpt {

// An open file descriptor, closed with the object.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& other) noexcept;
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

// Creates (or truncates) a regular file for writing, mode 0644.
Fd create_file(const std::string& path);
void write_all(const Fd& fd, const void* data, size_t size, const std::string& path);
// fsync and close, so that a failing close (NFS reports write errors there) is seen too.
void sync_and_close(Fd& fd, const std::string& path);
// Writes `text` as the whole content of `path` and makes it durable.
void write_text_file(const std::string& path, const std::string& text);

void make_directory(const std::string& path);
// Makes the entries of `path` (files created or renamed in it) durable.
void sync_directory(const std::string& path);
void rename_path(const std::string& from, const std::string& to);
// Swaps two existing paths atomically (renameat2 RENAME_EXCHANGE). Returns false, changing
// nothing, when the file system cannot do it; throws for any other failure.
bool exchange_paths(const std::string& a, const std::string& b);
// Removes a directory tree; a path that does not exist is not an error.
void remove_tree(const std::string& path);

}  // namespace lyre::ckpt
