// cli/commands.h -- the `npid` subcommands.
#pragma once

#include <string>
#include <vector>

namespace npid::cli {

int eval_main(const std::vector<std::string>& args);
int train_main(const std::vector<std::string>& args);

}  // namespace npid::cli
