// MakeSinks: the one place that names concrete adapters. Builds one Sink per
// [[sink]] table of a validated configuration, for database `db` (JetStream
// stream subjects derive from the topic template and the database name).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bridge/core/sink.h"
#include "conf/config.h"

namespace walbus::cli {

Result<std::vector<std::unique_ptr<Sink>>> MakeSinks(const conf::Config& config,
                                                     const std::string& db);
// "cnats 3.4.1, paho.mqtt.cpp 1.2.0, hiredis 0.14.1" for `walbus version`.
std::string AdapterVersions();

}  // namespace walbus::cli
