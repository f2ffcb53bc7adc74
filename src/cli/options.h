// cli/options.h -- the command line's option parser: --name value pairs and
// --flags, every value checked, every mistake an OptionError naming the
// option, what was expected and what came.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace npid::cli {

struct OptionError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Options {
 public:
  // args: argv after the subcommand. flags: options without a value. known:
  // every option of the command; another name is refused as it is met (so
  // `--bogus` is "unknown", not an option that swallowed the next argument).
  Options(const std::vector<std::string>& args, const std::set<std::string>& flags,
          const std::set<std::string>& known);
  bool has(const std::string& name) const;
  std::string str(const std::string& name, const std::string& fallback) const;
  std::string required(const std::string& name) const;
  std::int64_t integer(const std::string& name, std::int64_t fallback, std::int64_t lo, std::int64_t hi) const;
  double number(const std::string& name, double fallback, double lo, double hi) const;
  std::string choice(const std::string& name, const std::string& fallback, const std::vector<std::string>& allowed) const;

 private:
  std::map<std::string, std::string> values_;
};

}  // namespace npid::cli
