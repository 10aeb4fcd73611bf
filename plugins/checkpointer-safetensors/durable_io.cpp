#include "durable_io.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace lyre::ckpt {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path, int error) {
  throw std::runtime_error(what + " \"" + path + "\": " + std::strerror(error));
}

}  // namespace

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Fd::Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

Fd create_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create", path, errno);
  return Fd(fd);
}

void write_all(const Fd& fd, const void* data, size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    // Linux writes at most 0x7ffff000 bytes per call; asking for less keeps every call whole.
    const size_t chunk = size < (size_t{1} << 30) ? size : (size_t{1} << 30);
    const ssize_t n = ::write(fd.get(), p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot write", path, errno);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void sync_and_close(Fd& fd, const std::string& path) {
  if (::fsync(fd.get()) != 0) fail("cannot fsync", path, errno);
  // Released before closing: a failed close must not be retried by the destructor.
  if (::close(fd.release()) != 0) fail("cannot close", path, errno);
}

void write_text_file(const std::string& path, const std::string& text) {
  Fd fd = create_file(path);
  write_all(fd, text.data(), text.size(), path);
  sync_and_close(fd, path);
}

void make_directory(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0) fail("cannot create directory", path, errno);
}

void sync_directory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("cannot open directory", path, errno);
  Fd dir(fd);
  if (::fsync(dir.get()) != 0) fail("cannot fsync directory", path, errno);
}

void rename_path(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    throw std::runtime_error("cannot rename \"" + from + "\" to \"" + to + "\": " + std::strerror(errno));
  }
}

bool exchange_paths(const std::string& a, const std::string& b) {
  if (::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0) return true;
  const int error = errno;
  if (error == EINVAL || error == ENOSYS || error == EOPNOTSUPP) return false;
  throw std::runtime_error("cannot exchange \"" + a + "\" and \"" + b + "\": " + std::strerror(error));
}

void remove_tree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  // A path under a regular file does not exist either.
  if (ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory) return;
  if (ec) throw std::runtime_error("cannot remove \"" + path + "\": " + ec.message());
}

}  // namespace lyre::ckpt
