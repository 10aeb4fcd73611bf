// The host reaches libsentencepiece only through its private module (liblyre-sentencepiece.so,
// RTLD_LOCAL): the protobuf-lite symbols Debian's libsentencepiece exports must not enter the
// process's global scope, where they crash the real libprotobuf that a plugin brings (LibTorch).
// This suite links the host's data layer and nothing of sentencepiece itself.
#include <catch2/catch.hpp>
#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "data/tokenizer.hpp"
#include "temp_files.hpp"

namespace {

// A small SentencePiece model trained by spm_train (Debian's sentencepiece package).
std::string train_model(const lyre::test::TempDir& dir) {
  std::string text;
  for (int i = 0; i < 200; ++i)
    text += "the quick brown fox " + std::to_string(i) + " jumps over the lazy dog\n";
  const std::string input = dir.write("train.txt", text);
  const std::string cmd = "spm_train --input='" + input + "' --model_prefix='" + dir.path("sp") +
                          "' --vocab_size=60 --model_type=bpe --minloglevel=2 > /dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  return dir.path("sp.model");
}

}  // namespace

TEST_CASE("a SentencePiece tokenizer leaves protobuf symbols out of the global scope") {
  lyre::test::TempDir dir;
  const auto tok = lyre::load_tokenizer(train_model(dir));
  REQUIRE(tok->info().kind == "sentencepiece");
  const auto enc = tok->encode("the lazy fox");
  REQUIRE(!enc.ids.empty());
  CHECK(tok->decode(enc.ids) == "the lazy fox");

  // libsentencepiece is loaded now, but only in the module's own scope.
  CHECK(dlsym(RTLD_DEFAULT, "_ZN6google8protobuf10SimpleItoaB5cxx11Ei") == nullptr);

  // And the real libprotobuf loads and initialises beside it (a child, so that the crash this
  // guards against fails the test instead of killing the runner).
  void* probe = dlopen("libprotobuf.so.32", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
  CHECK(probe == nullptr);  // not loaded before we ask
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    void* handle = dlopen("libprotobuf.so.32", RTLD_NOW | RTLD_LOCAL);
    _exit(handle != nullptr ? 0 : 3);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  INFO("child status " << status << (WIFSIGNALED(status) ? " (killed by signal " + std::to_string(WTERMSIG(status)) + ")" : ""));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
