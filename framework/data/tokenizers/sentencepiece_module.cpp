// load_sentencepiece: SentencePiece tokenizers come from a module of their own,
// liblyre-sentencepiece.so, opened privately (RTLD_LOCAL) the first time a .model file is loaded.
//
// Why not link libsentencepiece into the host: Debian's libsentencepiece exports the symbols of
// the copy of protobuf-lite it carries. Linked into the host, they sit in the process's global
// symbol scope, and any library loaded later that brings the real libprotobuf (LibTorch does,
// for backend-torch) has libprotobuf's own references bound to them: libprotobuf's static
// initialisers then crash. Opened with RTLD_LOCAL, the module's symbols are visible to the
// module alone.
//
// The module is looked up where the build tree and the install tree put it: <exe>/../lib/lyre
// (build/bin next to build/lib/lyre; a relocated install tree), <exe>/../<libdir>/lyre, then
// <prefix>/<libdir>/lyre. It stays loaded for the life of the process (its tokenizers may live
// until exit).
#include <dlfcn.h>

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/tokenizers/loaders.hpp"

namespace lyre::tok {

namespace {

namespace fs = std::filesystem;

constexpr const char* kModuleFile = "liblyre-sentencepiece.so";
constexpr const char* kLoadSymbol = "lyre_sentencepiece_load";

using LoadFn = Tokenizer* (*)(const char* model_path);

std::vector<fs::path> module_dirs() {
  std::vector<fs::path> dirs;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  const fs::path libdir(LYRE_MODULE_INSTALL_DIR);  // e.g. lib/lyre or lib/x86_64-linux-gnu/lyre
  if (!ec) {
    const fs::path root = exe.parent_path().parent_path();
    dirs.push_back(root / "lib/lyre");
    if (libdir.is_relative() && libdir != fs::path("lib/lyre")) dirs.push_back(root / libdir);
  }
  dirs.push_back(libdir.is_absolute() ? libdir : fs::path(LYRE_INSTALL_PREFIX) / libdir);
  return dirs;
}

LoadFn open_module() {
  std::string tried;
  for (const fs::path& dir : module_dirs()) {
    const fs::path path = dir / kModuleFile;
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      tried += (tried.empty() ? "" : ", ") + path.string();
      continue;
    }
    // Never closed: tokenizers made by the module may live until exit.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) throw std::runtime_error(path.string() + ": cannot load: " + dlerror());
    auto fn = reinterpret_cast<LoadFn>(dlsym(handle, kLoadSymbol));
    if (fn == nullptr)
      throw std::runtime_error(path.string() + ": does not export " + kLoadSymbol + " (a module of another lyre build?)");
    return fn;
  }
  throw std::runtime_error(std::string("SentencePiece support is missing: ") + kModuleFile + " is not installed (looked for " +
                           tried + ")");
}

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path) {
  // A failed first attempt throws out of the initialiser, so the next call tries again.
  static const LoadFn load = open_module();
  return std::unique_ptr<Tokenizer>(load(model_path.c_str()));
}

}  // namespace lyre::tok
