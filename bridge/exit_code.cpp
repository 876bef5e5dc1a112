#include "bridge/exit_code.h"

#include "bridge/core/log.h"

namespace walbus::bridge {

int Fatal(const Status& st) {
  if (st.code() == Code::kCorruption) {
    // Nothing the user can correct: say that nothing is lost and what to report.
    log::Error(st.message() + "; walbus stopped without confirming past it, so nothing is lost: "
                              "report this line (and the PostgreSQL version) as a walbus bug",
               {{"code", CodeName(st.code())}});
    return kExitFatal;
  }
  log::Error(st.message(), {{"code", CodeName(st.code())}});
  return st.code() == Code::kInvalidArgument ? kExitUsage : kExitFatal;
}

}  // namespace walbus::bridge
