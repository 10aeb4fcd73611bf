// The services table plugins receive, and check()'s conversion of errors into exceptions.
#include <catch2/catch.hpp>

#include <vector>

#include "plugin/error.hpp"
#include "test_support.hpp"

using namespace lyre;

TEST_CASE("an error made through the host arrives through check with its code and message") {
  LyreError* err = host_api()->error_new(LYRE_ERROR_NOT_FOUND, "tensor 'w' missing");
  REQUIRE(err != nullptr);
  try {
    check(err, "backend-x: read_tensor");
    FAIL("check did not throw");
  } catch (const PluginError& e) {
    CHECK(e.code() == LYRE_ERROR_NOT_FOUND);
    CHECK(std::string(e.what()) == "backend-x: read_tensor: tensor 'w' missing");
  }
}

TEST_CASE("check lets success through and an empty context keeps the bare message") {
  CHECK_NOTHROW(check(nullptr, "anything"));
  CHECK_THROWS_WITH(check(host_api()->error_new(LYRE_ERROR_INTERNAL, "boom"), ""), "boom");
  CHECK_THROWS_WITH(check(host_api()->error_new(LYRE_ERROR_INTERNAL, nullptr), "ctx"), "ctx: (no message)");
}

TEST_CASE("the host table says ABI 1, rank 0 of 1") {
  const LyreHostApi* h = host_api();
  CHECK(h->struct_size == sizeof(LyreHostApi));
  CHECK(h->abi_major == LYRE_ABI_MAJOR);
  CHECK(h->abi_minor == LYRE_ABI_MINOR);
  CHECK(h->rank == 0);
  CHECK(h->world_size == 1);
}

TEST_CASE("plugin log lines carry the plugin's name and level") {
  test::LogCapture capture;
  host_api()->log(LYRE_LOG_WARNING, "backend-x", "device is slow");
  host_api()->log(LYRE_LOG_INFO, nullptr, "anonymous");
  CHECK(capture.lines("warning") == std::vector<std::string>{"[backend-x] device is slow"});
  CHECK(capture.lines("info") == std::vector<std::string>{"[plugin] anonymous"});
}

TEST_CASE("with one rank, all-reduce and broadcast leave data as it is and check their arguments") {
  std::vector<float> data{1.5f, -2.0f};
  CHECK_NOTHROW(check(host_api()->all_reduce_f32(data.data(), data.size(), LYRE_REDUCE_SUM), "all_reduce"));
  CHECK_NOTHROW(check(host_api()->all_reduce_f32(data.data(), data.size(), LYRE_REDUCE_MAX), "all_reduce"));
  CHECK(data == std::vector<float>{1.5f, -2.0f});
  CHECK_THROWS_WITH(check(host_api()->all_reduce_f32(data.data(), 2, 7), "h"), "h: all_reduce_f32: unknown reduce op 7");
  CHECK_THROWS_WITH(check(host_api()->all_reduce_f32(nullptr, 2, LYRE_REDUCE_SUM), "h"), "h: all_reduce_f32: data is NULL");

  CHECK_NOTHROW(check(host_api()->broadcast(data.data(), sizeof(float) * 2, 0), "broadcast"));
  CHECK(data == std::vector<float>{1.5f, -2.0f});
  try {
    check(host_api()->broadcast(data.data(), 8, 1), "h");
    FAIL("broadcast from rank 1 of 1 succeeded");
  } catch (const PluginError& e) {
    CHECK(e.code() == LYRE_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(e.what()) == "h: broadcast: root 1 outside [0, 1)");
  }
}
