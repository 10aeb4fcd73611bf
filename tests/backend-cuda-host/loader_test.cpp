// backend-cuda's light loader (plugins/backend-cuda/loader.cpp) as the host and the lyre binary
// see it, on any machine: its score and reason with this machine's driver (none in CI: score 0
// naming libcuda.so.1; a GPU: 1000 naming the device), every reason of the score driven by a fake
// libcuda.so.1 (fake_libcuda.cpp), the implementation agreeing with the loader, and what a run
// that asks for cuda does where it cannot run.
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "../run_lyre.hpp"
#include "plugin/plugin_host.hpp"

namespace fs = std::filesystem;

namespace {

const std::string kPluginDir = LYRE_TEST_PLUGIN_DIR;
const std::string kLoaderFile = "liblyre-backend-cuda.so";
const std::string kImplFile = "cuda/liblyre-backend-cuda-impl.so";

// This build's CUDA runtime version, as the loader writes it: "13.0".
std::string runtime_version() {
  return std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
}

// What this machine's driver says, asked independently of the loader: libcuda.so.1 loads, cuInit
// succeeds and shows a device (then its name), or not.
struct MachineDriver {
  enum class Kind { none, no_gpu, gpu } kind = Kind::none;
  std::string device_name;
};

MachineDriver machine_driver() {
  MachineDriver d;
  void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) return d;
  d.kind = MachineDriver::Kind::no_gpu;
  using InitFn = CUresult (*)(unsigned int);
  using CountFn = CUresult (*)(int*);
  using NameFn = CUresult (*)(char*, int, CUdevice);
  auto init = reinterpret_cast<InitFn>(dlsym(library, "cuInit"));
  auto count = reinterpret_cast<CountFn>(dlsym(library, "cuDeviceGetCount"));
  auto name = reinterpret_cast<NameFn>(dlsym(library, "cuDeviceGetName"));
  int n = 0;
  char buffer[256] = {};
  if (init == nullptr || count == nullptr || name == nullptr || init(0) != CUDA_SUCCESS ||
      count(&n) != CUDA_SUCCESS || n <= 0 || name(buffer, sizeof buffer - 1, 0) != CUDA_SUCCESS)
    return d;
  d.kind = MachineDriver::Kind::gpu;
  d.device_name = buffer;
  return d;
}

using Run = lyre::test::LyreRun;

// Runs `lyre ARGS...` in `dir` with LYRE_PLUGIN_PATH = plugin_path and `env` added. With
// `fake_driver`, the fake libcuda.so.1 is first on LD_LIBRARY_PATH and answers from `fake_driver`
// (LYRE_FAKE_LIBCUDA).
Run run_lyre(const std::vector<std::string>& args, const std::string& plugin_path = kPluginDir,
             const char* fake_driver = nullptr, const std::map<std::string, std::string>& env = {},
             const fs::path& dir = fs::temp_directory_path()) {
  std::map<std::string, std::string> all{{"LYRE_PLUGIN_PATH", plugin_path}};
  if (fake_driver != nullptr) {
    all["LD_LIBRARY_PATH"] = LYRE_FAKE_DRIVER_DIR;
    all["LYRE_FAKE_LIBCUDA"] = fake_driver;
  }
  for (const auto& [key, value] : env) all[key] = value;
  return lyre::test::run_lyre(args, all, dir);
}

// One backend's line of `lyre plugins`: "  score:       0 (cannot run here: <reason>)" or
// "  score:       1000 (<reason>)".
struct ScoreLine {
  int score = -1;
  std::string reason;
};

// The score line of the block `lyre plugins` prints for the file whose path ends in `file`.
ScoreLine score_of(const std::string& listing, const std::string& file) {
  std::istringstream lines(listing);
  std::string line;
  bool in_block = false;
  while (std::getline(lines, line)) {
    if (line.empty()) {
      in_block = false;
    } else if (line.size() >= file.size() && line.compare(line.size() - file.size(), file.size(), file) == 0 &&
               line.find('/') != std::string::npos && line[0] != ' ') {
      in_block = true;
    } else if (in_block && line.rfind("  score:", 0) == 0) {
      const size_t digits = line.find_first_of("0123456789");
      const size_t open = line.find(" (", digits);
      REQUIRE(digits != std::string::npos);
      REQUIRE(open != std::string::npos);
      REQUIRE(line.back() == ')');
      ScoreLine s;
      s.score = std::stoi(line.substr(digits, open - digits));
      s.reason = line.substr(open + 2, line.size() - open - 3);
      const std::string refused = "cannot run here: ";
      if (s.score == 0 && s.reason.rfind(refused, 0) == 0) s.reason = s.reason.substr(refused.size());
      return s;
    }
  }
  FAIL("`lyre plugins` lists no backend in a file ending in " << file << ":\n" << listing);
  return {};
}

// `lyre plugins` with the fake driver answering `fake_driver`: the loader's score line.
ScoreLine fake_score(const char* fake_driver, const std::map<std::string, std::string>& env = {}) {
  const Run run = run_lyre({"plugins"}, kPluginDir, fake_driver, env);
  INFO(run.output);
  REQUIRE(run.status == 0);
  return score_of(run.output, "/" + kLoaderFile);
}

void require_implementation_built() {
  const fs::path impl = fs::path(kPluginDir) / kImplFile;
  INFO("the loader scores 0 without its implementation: build lyre-backend-cuda-impl");
  REQUIRE(fs::exists(impl));
}

}  // namespace

TEST_CASE("lyre plugins lists backend-cuda with the score and reason of this machine's driver") {
  const Run run = run_lyre({"plugins"});
  INFO(run.output);
  REQUIRE(run.status == 0);
  const ScoreLine s = score_of(run.output, "/" + kLoaderFile);
  CHECK(run.output.find("  name:        backend-cuda\n") != std::string::npos);
  CHECK(run.output.find("  slots:       backend, model, optimizer\n") != std::string::npos);
  const MachineDriver driver = machine_driver();
  switch (driver.kind) {
    case MachineDriver::Kind::none:  // CI: no NVIDIA driver at all
      CHECK(s.score == 0);
      CHECK_THAT(s.reason, Catch::StartsWith("no NVIDIA driver: libcuda.so.1 cannot be loaded (") &&
                               Catch::Contains("libcuda.so.1"));
      break;
    case MachineDriver::Kind::no_gpu:  // a driver, but cuInit finds nothing to run on
      CHECK(s.score == 0);
      CHECK_THAT(s.reason, Catch::StartsWith("cuInit failed: ") || Catch::StartsWith("no CUDA device"));
      break;
    case MachineDriver::Kind::gpu:
      require_implementation_built();
      CHECK(s.score == 1000);
      CHECK_THAT(s.reason, Catch::StartsWith(driver.device_name + " (sm_") &&
                               Catch::EndsWith(", CUDA " + runtime_version()));
      break;
  }
}

TEST_CASE("scoring backend-cuda loads neither its implementation nor the CUDA runtime") {
  // The dynamic loader's record of the files `lyre plugins` opens, with a usable (fake) GPU so the
  // probe runs to the end.
  const Run run = run_lyre({"plugins"}, kPluginDir, "", {{"LD_DEBUG", "files"}});
  INFO(run.output);
  REQUIRE(run.status == 0);
  CHECK(run.output.find(kLoaderFile) != std::string::npos);  // discovered and scored
  CHECK(run.output.find(LYRE_FAKE_DRIVER_DIR "/libcuda.so.1") != std::string::npos);  // the probe asked the driver
  CHECK(run.output.find("liblyre-backend-cuda-impl.so") == std::string::npos);
  CHECK(run.output.find("libcudart") == std::string::npos);
  CHECK(run.output.find("libcublas") == std::string::npos);
}

TEST_CASE("the score names the device, its capability and memory, the driver and the runtime") {
  require_implementation_built();
  const std::string tail = ", driver 13.0, CUDA " + runtime_version();
  SECTION("one H100") {
    const ScoreLine s = fake_score("");
    CHECK(s.score == 1000);
    CHECK(s.reason == "NVIDIA H100 80GB HBM3 (sm_90, 79.6 GiB)" + tail);
  }
  SECTION("the first of several devices") {
    const ScoreLine s = fake_score("count=8;name=NVIDIA H200;memory=150754820096");
    CHECK(s.score == 1000);
    CHECK(s.reason == "NVIDIA H200 (sm_90, 140.4 GiB; device 0 of 8)" + tail);
  }
  SECTION("a driver of a later minor version runs this build (CUDA minor version compatibility)") {
    const std::string newer = std::to_string(CUDART_VERSION / 1000) + ".9";
    const std::string setting = "version=" + std::to_string(CUDART_VERSION / 1000 * 1000 + 90);
    const ScoreLine s = fake_score(setting.c_str());
    CHECK(s.score == 1000);
    CHECK(s.reason == "NVIDIA H100 80GB HBM3 (sm_90, 79.6 GiB), driver " + newer + ", CUDA " + runtime_version());
  }
}

TEST_CASE("each reason the driver gives to refuse is scored 0 and said precisely") {
  SECTION("cuInit finds no device, naming the CUresult and CUDA_VISIBLE_DEVICES") {
    const ScoreLine s = fake_score("init=100", {{"CUDA_VISIBLE_DEVICES", ""}});
    CHECK(s.score == 0);
    CHECK(s.reason ==
          "cuInit failed: CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected) (CUDA_VISIBLE_DEVICES=\"\")");
  }
  SECTION("a driver of an older CUDA major version") {
    const std::string setting = "version=" + std::to_string((CUDART_VERSION / 1000 - 1) * 1000 + 40);
    const ScoreLine s = fake_score(setting.c_str());
    CHECK(s.score == 0);
    CHECK(s.reason == "the NVIDIA driver is too old: it supports CUDA " + std::to_string(CUDART_VERSION / 1000 - 1) +
                          ".4, this build of backend-cuda needs CUDA " + runtime_version() + " (update the driver)");
  }
  SECTION("no device after cuInit") {
    const ScoreLine s = fake_score("count=0");
    CHECK(s.score == 0);
    CHECK(s.reason == "no CUDA device is visible");
  }
  SECTION("a device older than Ampere: no bf16") {
    const ScoreLine s = fake_score("cc=75;name=Tesla T4");
    CHECK(s.score == 0);
    CHECK(s.reason == "CUDA device 0, Tesla T4, has compute capability 7.5 (sm_75): backend-cuda needs 8.0 or "
                      "newer (Ampere or later) for bf16");
  }
#ifdef LYRE_CUDA_STUB_LIBCUDA
  SECTION("the toolkit's stub libcuda is not a driver") {
    const fs::path dir = fs::temp_directory_path() / ("lyre-cuda-stub-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    fs::remove(dir / "libcuda.so.1");
    fs::create_symlink(LYRE_CUDA_STUB_LIBCUDA, dir / "libcuda.so.1");
    const Run run = run_lyre({"plugins"}, kPluginDir, nullptr, {{"LD_LIBRARY_PATH", dir.string()}});
    fs::remove_all(dir);
    INFO(run.output);
    REQUIRE(run.status == 0);
    const ScoreLine s = score_of(run.output, "/" + kLoaderFile);
    CHECK(s.score == 0);
    CHECK(s.reason == "cuInit failed: CUDA_ERROR_STUB_LIBRARY (this libcuda.so.1 is the CUDA toolkit's stub, not an "
                      "NVIDIA driver)");
  }
#endif
}

TEST_CASE("a device of no architecture this build has code for is refused, one the PTX runs on is taken") {
  if (std::string(LYRE_CUDA_ARCHITECTURES) != "90") {
    WARN("built for CUDA architectures " LYRE_CUDA_ARCHITECTURES ", not the default 90: cases written for 90 skipped");
    return;
  }
  require_implementation_built();
  const ScoreLine a100 = fake_score("cc=80;name=NVIDIA A100-SXM4-80GB");
  CHECK(a100.score == 0);
  CHECK(a100.reason == "CUDA device 0, NVIDIA A100-SXM4-80GB (sm_80), has no device code in this build "
                       "(CMAKE_CUDA_ARCHITECTURES 90): rebuild with -DCMAKE_CUDA_ARCHITECTURES=\"90;80\"");
  // "90" holds PTX for compute_90 besides the sm_90 SASS: the driver compiles it for a newer GPU.
  const ScoreLine b200 = fake_score("cc=100;name=NVIDIA B200");
  CHECK(b200.score == 1000);
  CHECK_THAT(b200.reason, Catch::StartsWith("NVIDIA B200 (sm_100, "));
}

TEST_CASE("without its implementation beside it the loader scores 0 and says where it looked") {
  const fs::path dir = fs::temp_directory_path() / ("lyre-cuda-loader-alone-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(fs::path(kPluginDir) / kLoaderFile, dir / kLoaderFile);
  // The copy comes first on the search path: it wins over the build tree's file of that name.
  const Run run = run_lyre({"plugins"}, dir.string(), "");
  INFO(run.output);
  REQUIRE(run.status == 0);
  const ScoreLine s = score_of(run.output, dir.string() + "/" + kLoaderFile);
  fs::remove_all(dir);
  CHECK(s.score == 0);
  CHECK(s.reason == "its CUDA implementation (" + kImplFile + ") is missing: looked for " + dir.string() + "/" +
                        kImplFile);
}

TEST_CASE("the implementation scores exactly as the loader does") {
  require_implementation_built();
  // With its folder first on the search path discovery takes the implementation (a plugin of the
  // same name: the loader found after it is refused as a duplicate).
  const std::string impl_dir = kPluginDir + "/cuda";
  auto both = [&](const char* fake) {
    const Run loader = run_lyre({"plugins"}, kPluginDir, fake);
    const Run impl = run_lyre({"plugins"}, impl_dir, fake);
    INFO(loader.output << impl.output);
    REQUIRE(loader.status == 0);
    REQUIRE(impl.status == 0);
    return std::make_pair(score_of(loader.output, "/" + kLoaderFile), score_of(impl.output, "/" + kImplFile));
  };
  for (const char* fake : {"", "cc=75;name=Tesla T4", "init=100", "count=3", "version=12080"}) {
    INFO("fake driver: " << fake);
    const auto [loader, impl] = both(fake);
    CHECK(impl.score == loader.score);
    CHECK(impl.reason == loader.reason);
  }
  INFO("this machine's driver");
  const auto [loader, impl] = both(nullptr);
  CHECK(impl.score == loader.score);
  CHECK(impl.reason == loader.reason);
}

TEST_CASE("the host refuses backend cuda where it scores 0 naming the reason, and auto picks by score") {
  lyre::PluginRegistry registry = lyre::PluginRegistry::discover({kPluginDir});
  const MachineDriver driver = machine_driver();
  if (driver.kind == MachineDriver::Kind::gpu) {
    require_implementation_built();
    CHECK(registry.backend("cuda")->name() == "backend-cuda");
    CHECK(registry.backend("auto")->name() == "backend-cuda");  // 1000 over backend-cpu's 100
    return;
  }
  std::string error;
  try {
    registry.backend("cuda");
  } catch (const std::runtime_error& e) {
    error = e.what();
  }
  CHECK_THAT(error, Catch::StartsWith("backend backend-cuda cannot run here: "));
  if (driver.kind == MachineDriver::Kind::none)
    CHECK_THAT(error, Catch::StartsWith("backend backend-cuda cannot run here: no NVIDIA driver: libcuda.so.1"));
#ifdef LYRE_TEST_HAVE_BACKEND_CPU
  CHECK(registry.backend("auto")->name() == "backend-cpu");
#endif
}

TEST_CASE("lyre train --set backend=cuda fails with the reason where backend-cuda cannot run") {
  const std::string config = LYRE_BINARY_DIR "/examples/quickstart/config.json";
  REQUIRE(fs::exists(config));
  SECTION("a driver without a device (fake)") {
    const Run run = run_lyre({"train", config, "--set", "backend=cuda"}, kPluginDir, "init=100");
    INFO(run.output);
    CHECK(run.status != 0);
    CHECK_THAT(run.output,
               Catch::Contains("backend backend-cuda cannot run here: cuInit failed: CUDA_ERROR_NO_DEVICE"));
  }
  SECTION("this machine, where it has no driver") {
    if (machine_driver().kind != MachineDriver::Kind::none) return;  // the fake section covers it
    const Run run = run_lyre({"train", config, "--set", "backend=cuda"});
    INFO(run.output);
    CHECK(run.status == 1);
    CHECK_THAT(run.output,
               Catch::Contains("backend backend-cuda cannot run here: no NVIDIA driver: libcuda.so.1 cannot be "
                               "loaded"));
  }
}
