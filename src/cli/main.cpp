// npid -- the command line: `npid train`, `npid eval`, `npid version`.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/options.h"
#include "npid/npid.h"

namespace {

const char* kUsage = R"(usage: npid <command> [options]

commands:
  train     train an embedding (npid train --help); without options: the built-in synthetic run
  eval      kNN / linear evaluation and retrieval picture of a model (npid eval --help)
  version   library version and CUDA status
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (cmd == "eval") return npid::cli::eval_main(args);
    if (cmd == "train") return npid::cli::train_main(args);
    if (cmd == "version") {
      std::printf("libnpid_cuda %s\n%s\n", NPID_VERSION_STRING, npid::cuda_status().c_str());
      return 0;
    }
    std::fprintf(stderr, "npid: unknown command '%s'\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const npid::cli::OptionError& e) {
    std::fflush(stdout);  // what was printed comes first in a log that gathers both
    std::fprintf(stderr, "npid %s: error: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "npid %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
