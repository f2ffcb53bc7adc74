#include "cli/options.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace npid::cli {

Options::Options(const std::vector<std::string>& args, const std::set<std::string>& flags,
                 const std::set<std::string>& known) {
  // --help wins over every other argument, good or bad.
  if (known.count("--help") && std::find(args.begin(), args.end(), "--help") != args.end()) {
    values_["--help"] = "1";
    return;
  }
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() < 3 || a.compare(0, 2, "--") != 0) throw OptionError("unexpected argument '" + a + "' (options start with --)");
    std::string name = a, value;
    const auto eq = a.find('=');
    if (eq != std::string::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
    }
    if (!known.count(name)) throw OptionError("unknown option " + name + " (see --help)");
    if (eq != std::string::npos) {
      if (flags.count(name)) throw OptionError("option " + name + " takes no value, got '" + a + "'");
    } else if (flags.count(a)) {
      value = "1";
    } else {
      if (i + 1 >= args.size()) throw OptionError("option " + a + " expects a value, got none");
      // No value starts with "--": the next option means this one's value is missing.
      if (args[i + 1].compare(0, 2, "--") == 0)
        throw OptionError("option " + a + " expects a value, got the option " + args[i + 1]);
      value = args[++i];
    }
    if (values_.count(name)) throw OptionError("option " + name + " given twice");
    values_[name] = value;
  }
}

bool Options::has(const std::string& name) const { return values_.count(name) > 0; }

std::string Options::str(const std::string& name, const std::string& fallback) const {
  const auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

std::string Options::required(const std::string& name) const {
  const auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) throw OptionError("option " + name + " is required");
  return it->second;
}

std::int64_t Options::integer(const std::string& name, std::int64_t fallback, std::int64_t lo, std::int64_t hi) const {
  if (!has(name)) return fallback;
  const std::string v = str(name, "");
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE || x < lo || x > hi)
    throw OptionError("option " + name + " expects an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                      "], got '" + v + "'");
  return x;
}

double Options::number(const std::string& name, double fallback, double lo, double hi) const {
  if (!has(name)) return fallback;
  const std::string v = str(name, "");
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(x) || x < lo || x > hi)
    throw OptionError("option " + name + " expects a number in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                      "], got '" + v + "'");
  return x;
}

std::string Options::choice(const std::string& name, const std::string& fallback,
                            const std::vector<std::string>& allowed) const {
  const std::string v = str(name, fallback);
  for (const auto& a : allowed)
    if (a == v) return v;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : "|") + a;
  throw OptionError("option " + name + " expects one of " + list + ", got '" + v + "'");
}

}  // namespace npid::cli
