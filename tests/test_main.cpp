// The one translation unit that compiles Catch2's runner. Tests run on 2 OpenMP threads (the CI
// machine's cores) unless OMP_NUM_THREADS says otherwise; OpenMP reads it at its first parallel
// region, after main starts.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdlib>

int main(int argc, char* argv[]) {
  ::setenv("OMP_NUM_THREADS", "2", /*overwrite=*/0);
  return Catch::Session().run(argc, argv);
}
