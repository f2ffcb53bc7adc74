#include "npid/version.h"

namespace npid {
const char* version() noexcept { return NPID_VERSION_STRING; }
}  // namespace npid
