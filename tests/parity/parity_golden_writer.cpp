// parity_golden_writer DIR: writes the parity suite's reference side (every case's inputs, and
// what backend-torch at fp64 computes from them) into DIR as golden files (golden_files.hpp), for
// a machine that cannot build backend-torch. There, with DIR copied over,
//   LYRE_PARITY_GOLDEN=DIR ctest -R "parity: backend-cuda"
// judges backend-cuda against them.
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>

#include "golden_files.hpp"
#include "parity_backends.hpp"

int main(int argc, char* argv[]) {
  using namespace lyre::parity;
  if (argc != 2 || argv[1][0] == '-' || argv[1][0] == '\0') {
    std::fprintf(stderr,
                 "usage: parity_golden_writer DIR\n"
                 "Writes golden.json and case-<i>.safetensors into DIR (created if missing): the parity "
                 "cases' inputs and backend-torch's fp64 results, for %s=DIR.\n",
                 kGoldenEnv);
    return 2;
  }
  try {
    const auto start = std::chrono::steady_clock::now();
    const Reference reference = live_reference(torch_side("fp64"));
    uintmax_t bytes = 0;
    for (const std::string& path : write_golden(argv[1], reference)) bytes += std::filesystem::file_size(path);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("parity_golden_writer: %zu cases from %s into %s: %.2f MiB in %.1f s\n", reference.runs.size(),
                reference.label.c_str(), argv[1], static_cast<double>(bytes) / (1 << 20), seconds);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parity_golden_writer: %s\n", e.what());
    return 1;
  }
}
