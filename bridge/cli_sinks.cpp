#include "bridge/cli_sinks.h"

#include "adapters/stdout/stdout_sink.h"

namespace walbus::cli {

Result<std::vector<std::unique_ptr<Sink>>> MakeSinks(const conf::Config& config,
                                                     const std::string& db) {
  (void)db;
  std::vector<std::unique_ptr<Sink>> sinks;
  for (const conf::SinkConfig& s : config.sinks) {
    if (s.type == "stdout") {
      sinks.push_back(std::make_unique<adapters::stdout_sink::StdoutSink>(s.name));
      continue;
    }
    return Status::InvalidArgument(config.path + ":" + std::to_string(s.line) + ":1: sink \"" +
                                   s.name + "\": type \"" + s.type +
                                   "\" is not available in this build");
  }
  return sinks;
}

std::string AdapterVersions() { return ""; }

}  // namespace walbus::cli
