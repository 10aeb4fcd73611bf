// Runs the built `lyre` binary as a child process, for tests of the command line.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace lyre::test {

struct LyreRun {
  int status = -1;     // the exit status, or -1 when it did not exit normally
  std::string output;  // stdout and stderr, interleaved as written
};

// Runs `<build>/bin/lyre ARGS...` in `dir`, with each variable of `env` set on top of this
// process's environment (LYRE_PLUGIN_PATH among them, as the test wants it).
inline LyreRun run_lyre(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
                        const std::filesystem::path& dir) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("run_lyre: pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("run_lyre: fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    if (::dup2(fds[1], 1) < 0 || ::dup2(fds[1], 2) < 0 || ::chdir(dir.c_str()) != 0) ::_exit(126);
    for (const auto& [key, value] : env) ::setenv(key.c_str(), value.c_str(), 1);
    const std::string lyre = LYRE_BINARY_DIR "/bin/lyre";
    std::vector<char*> argv{const_cast<char*>(lyre.c_str())};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(lyre.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  LyreRun run;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) run.output.append(buffer, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  run.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

}  // namespace lyre::test
