// Pre-tokenized uint16/uint32 files: round trips, dtype resolution, and errors naming the file
// and the token index.
#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include "data/token_file.hpp"
#include "temp_files.hpp"

namespace {

using lyre::TokenDtype;
using lyre::TokenFile;
using lyre::test::TempDir;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("uint16 and uint32 token files read back what was written") {
  TempDir dir;
  for (TokenDtype dtype : {TokenDtype::uint16, TokenDtype::uint32}) {
    const int32_t top = dtype == TokenDtype::uint16 ? 65535 : 2000000000;
    std::vector<int32_t> ids = {0, 1, 2, 255, 256, 50256, top};
    for (int i = 0; i < 1000; ++i) ids.push_back((i * 7919) % 50000);
    const std::string path = dir.path(std::string("ids.") + lyre::token_dtype_name(dtype));
    lyre::write_token_file(path, ids, dtype);
    const TokenFile file = TokenFile::open(path, dtype, int64_t{top} + 1);
    REQUIRE(file.num_tokens() == static_cast<int64_t>(ids.size()));
    CHECK(file.dtype() == dtype);
    std::vector<int32_t> all(ids.size());
    file.read(0, file.num_tokens(), all.data());
    CHECK(all == ids);
    std::vector<int32_t> window(5);
    file.read(4, 5, window.data());
    CHECK(window == std::vector<int32_t>(ids.begin() + 4, ids.begin() + 9));
    file.read(file.num_tokens(), 0, window.data());  // an empty range at the end is fine
    file.check_ids();
  }
}

TEST_CASE("the dtype comes from the config or from a .u16/.u32 extension") {
  CHECK(lyre::resolve_token_dtype("a.bin", "uint16") == TokenDtype::uint16);
  CHECK(lyre::resolve_token_dtype("a.bin", "uint32") == TokenDtype::uint32);
  CHECK(lyre::resolve_token_dtype("train.u16", "auto") == TokenDtype::uint16);
  CHECK(lyre::resolve_token_dtype("train.u32", "auto") == TokenDtype::uint32);
  CHECK(lyre::token_dtype_size(TokenDtype::uint32) == 4);
  CHECK(error_of([] { lyre::resolve_token_dtype("train.bin", "auto"); }) ==
        "train.bin: cannot tell the token dtype from the extension \".bin\" (.u16 and .u32 say it); set dtype to "
        "\"uint16\" or \"uint32\"");
  CHECK(error_of([] { lyre::resolve_token_dtype("train.bin", "int8"); }) ==
        "train.bin: unknown token dtype \"int8\"; use \"uint16\", \"uint32\" or \"auto\"");
}

TEST_CASE("a token file whose size is not a whole number of ids is an error") {
  TempDir dir;
  const std::string odd = dir.write("odd.bin", std::string(7, '\0'));
  CHECK(error_of([&] { TokenFile::open(odd, TokenDtype::uint16, 100); }) ==
        odd + ": 7 bytes is not a whole number of uint16 ids (2 bytes each); is the dtype right?");
  const std::string six = dir.write("six.bin", std::string(6, '\0'));
  CHECK(error_of([&] { TokenFile::open(six, TokenDtype::uint32, 100); }) ==
        six + ": 6 bytes is not a whole number of uint32 ids (4 bytes each); is the dtype right?");
  CHECK(TokenFile::open(six, TokenDtype::uint16, 100).num_tokens() == 3);
}

TEST_CASE("an empty or missing token file is an error naming it") {
  TempDir dir;
  const std::string empty = dir.write("empty.u16", "");
  CHECK(error_of([&] { TokenFile::open(empty, TokenDtype::uint16, 100); }) == empty + ": the token file is empty");
  CHECK_THAT(error_of([&] { TokenFile::open(dir.path("none.u16"), TokenDtype::uint16, 100); }),
             Catch::StartsWith(dir.path("none.u16") + ": cannot open: "));
  CHECK(error_of([&] { TokenFile::open(empty, TokenDtype::uint16, 0); }) == empty + ": vocab_size must be positive, got 0");
}

TEST_CASE("an id not below vocab_size is an error naming the file and the token index") {
  TempDir dir;
  const std::string path = dir.path("ids.u32");
  lyre::write_token_file(path, {1, 2, 3, 99, 4, 1000, 5}, TokenDtype::uint32);
  const TokenFile file = TokenFile::open(path, TokenDtype::uint32, 100);
  std::vector<int32_t> out(7);
  file.read(0, 5, out.data());  // the bad id is outside this range
  CHECK(error_of([&] { file.read(2, 5, out.data()); }) ==
        path + ": token 5 is 1000, not below vocab_size 100; was the file written with another tokenizer or dtype?");
  CHECK(error_of([&] { file.check_ids(); }) ==
        path + ": token 5 is 1000, not below vocab_size 100; was the file written with another tokenizer or dtype?");
  // Ids at or above 2^31 are reported as the unsigned values they are.
  lyre::write_token_file(path, {7}, TokenDtype::uint32);
  const std::string huge = dir.write("huge.u32", std::string("\xff\xff\xff\xff", 4));
  CHECK_THAT(error_of([&] { TokenFile::open(huge, TokenDtype::uint32, 100).check_ids(); }),
             Catch::Contains("token 0 is 4294967295, not below vocab_size 100"));
}

TEST_CASE("a read outside the file is an error naming the range") {
  TempDir dir;
  const std::string path = dir.path("ids.u16");
  lyre::write_token_file(path, {1, 2, 3}, TokenDtype::uint16);
  const TokenFile file = TokenFile::open(path, TokenDtype::uint16, 10);
  std::vector<int32_t> out(4);
  CHECK(error_of([&] { file.read(1, 3, out.data()); }) == path + ": tokens [1, 4) are outside the file's 3 tokens");
  CHECK(error_of([&] { file.read(-1, 1, out.data()); }) == path + ": tokens [-1, 0) are outside the file's 3 tokens");
}

TEST_CASE("writing an id that does not fit the dtype is an error naming it") {
  TempDir dir;
  const std::string path = dir.path("ids.u16");
  CHECK(error_of([&] { lyre::write_token_file(path, {1, 65536}, TokenDtype::uint16); }) ==
        path + ": id 65536 at index 1 does not fit uint16");
  CHECK(error_of([&] { lyre::write_token_file(path, {-1}, TokenDtype::uint32); }) ==
        path + ": id -1 at index 0 does not fit uint32");
}
