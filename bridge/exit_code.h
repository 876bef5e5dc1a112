// The exit codes of the walbus commands (SPEC §1) and the one error line a
// command prints before it exits with one of them. Shared by bridge/main.cpp
// and the commands it runs (bridge/backfill_command.h).
#pragma once

#include "bridge/core/status.h"

namespace walbus::bridge {

inline constexpr int kExitOk = 0;     // done, or a clean stop
inline constexpr int kExitFatal = 1;  // any other fatal error
inline constexpr int kExitUsage = 2;  // usage or configuration error: nothing started

// Logs `st` as one error line on stderr and returns its exit code: kExitUsage
// for InvalidArgument, else kExitFatal. A Corruption line adds that nothing
// was lost and asks for a bug report.
int Fatal(const Status& st);

}  // namespace walbus::bridge
