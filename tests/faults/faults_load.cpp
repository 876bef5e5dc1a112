// faults_load: the fault suite's sustained write load. Several threads, each
// with its own libpq connection, call the PL/pgSQL function fx_tx() of
// tests/faults/schema.sql at a steady total rate: multi-row transactions of
// inserts, updates and deletes over three tables, some committed, some rolled
// back on purpose (ROLLBACK, or an exception raised inside), some committed
// with a rolled-back subtransaction inside, and now and then a large one.
//
// The committed truth is not kept here: fx_tx() writes one fx_oplog row per
// row change in the same transaction, so PostgreSQL itself says afterwards
// exactly which changes committed, including those whose COMMIT reply was lost
// when the server went down. This program only counts what it saw.
//
//   faults_load --dsn DSN --rate TX_PER_S --threads N --seed S --stats FILE [--seconds N]
//
// Runs until SIGTERM/SIGINT (or --seconds), then writes FILE as JSON and exits 0.
// While PostgreSQL is down the threads reconnect every 200 ms.
#include <libpq-fe.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_stop{false};

struct Counts {
  std::atomic<long> committed{0};          // COMMIT acknowledged
  std::atomic<long> committed_sub{0};      // of which with a rolled-back subtransaction
  std::atomic<long> committed_big{0};      // of which large
  std::atomic<long> rolled_back{0};        // explicit ROLLBACK
  std::atomic<long> raised{0};             // aborted by an exception inside
  std::atomic<long> aborted_big{0};        // large aborted
  std::atomic<long> conflicts{0};          // deadlock / lock timeout / serialization: aborted
  std::atomic<long> unknown{0};            // connection lost before the reply: outcome in fx_oplog
  std::atomic<long> other_errors{0};
  std::atomic<long> reconnects{0};
  std::mutex mu;
  std::map<std::string, long> error_samples;  // first line of other errors -> count
};

using Conn = std::unique_ptr<PGconn, decltype(&PQfinish)>;
using Res = std::unique_ptr<PGresult, decltype(&PQclear)>;

Conn Connect(const std::string& dsn) {
  Conn c(PQconnectdb(dsn.c_str()), &PQfinish);
  if (!c || PQstatus(c.get()) != CONNECTION_OK) return Conn(nullptr, &PQfinish);
  Res r(PQexec(c.get(), "SET lock_timeout = '3s'; SET statement_timeout = '60s'; "
                        "SET client_min_messages = warning"),
        &PQclear);
  if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) return Conn(nullptr, &PQfinish);
  return c;
}

enum class Mode { kCommit, kRollback, kRaise, kSub };

void Worker(const std::string& dsn, double rate, unsigned seed, Counts* counts) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Conn conn(nullptr, &PQfinish);
  auto period = std::chrono::duration<double>(1.0 / rate);
  auto next = Clock::now();
  while (!g_stop.load()) {
    if (!conn) {
      conn = Connect(dsn);
      if (!conn) {
        std::this_thread::sleep_for(200ms);
        continue;
      }
      ++counts->reconnects;
      next = Clock::now();
    }
    double p = u(rng);
    Mode mode = p < 0.78 ? Mode::kCommit : p < 0.86 ? Mode::kRollback : p < 0.92 ? Mode::kRaise : Mode::kSub;
    int ops = 1 + static_cast<int>(u(rng) * 8);
    int big = 0;
    double q = u(rng);
    // Now and then a large transaction (one multi-row statement), committed or
    // aborted: 0.5 % of the committed ones, 3 % of the aborted ones.
    if (mode == Mode::kCommit && q < 0.005) big = 100 + static_cast<int>(u(rng) * 900);
    if ((mode == Mode::kRollback || mode == Mode::kRaise) && q < 0.03) big = 100 + static_cast<int>(u(rng) * 900);
    const char* m = mode == Mode::kCommit ? "commit" : mode == Mode::kRollback ? "abort"
                  : mode == Mode::kRaise  ? "raise"  : "sub";
    std::string call = "SELECT fx_tx(" + std::to_string(ops) + ", '" + m + "', " + std::to_string(big) + ")";
    std::string sql = mode == Mode::kRollback ? "BEGIN; " + call + "; ROLLBACK" : call;
    Res r(PQexec(conn.get(), sql.c_str()), &PQclear);
    ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
      if (mode == Mode::kRollback) {
        ++counts->rolled_back;
        if (big) ++counts->aborted_big;
      } else {
        ++counts->committed;
        if (mode == Mode::kSub) ++counts->committed_sub;
        if (big) ++counts->committed_big;
      }
    } else if (PQstatus(conn.get()) != CONNECTION_OK) {
      // The server went away: whether the transaction committed is for
      // fx_oplog to say.
      if (mode == Mode::kCommit || mode == Mode::kSub) ++counts->unknown;
      conn.reset();
      continue;
    } else {
      const char* state = r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr;
      std::string code = state ? state : "";
      std::string msg = r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn.get());
      if (mode == Mode::kRaise && msg.find("fx: deliberate abort") != std::string::npos) {
        ++counts->raised;
        if (big) ++counts->aborted_big;
      } else if (code == "40P01" || code == "55P03" || code == "40001") {
        ++counts->conflicts;
      } else if (code.rfind("57P", 0) == 0 || code.rfind("08", 0) == 0) {
        // Shutdown in progress / connection failure reported as an error.
        if (mode == Mode::kCommit || mode == Mode::kSub) ++counts->unknown;
        conn.reset();
        continue;
      } else {
        ++counts->other_errors;
        std::string first = code + " " + msg.substr(0, msg.find('\n'));
        std::lock_guard<std::mutex> lock(counts->mu);
        ++counts->error_samples[first];
      }
      // After an error inside the explicit BEGIN the session is in an aborted
      // transaction: end it.
      Res end(PQexec(conn.get(), "ROLLBACK"), &PQclear);
    }
    next += std::chrono::duration_cast<Clock::duration>(period);
    auto now = Clock::now();
    if (next > now) {
      std::this_thread::sleep_until(next);
    } else if (now - next > 2s) {
      next = now;  // behind after an outage: do not burst to catch up
    }
  }
}

std::string Json(const Counts& c, double seconds) {
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "{\"seconds\": %.1f, \"committed\": %ld, \"committed_with_rolled_back_subtransaction\": %ld, "
                "\"committed_large\": %ld, \"rolled_back\": %ld, \"raised\": %ld, \"aborted_large\": %ld, "
                "\"conflicts\": %ld, \"unknown_outcome\": %ld, \"other_errors\": %ld, \"reconnects\": %ld",
                seconds, c.committed.load(), c.committed_sub.load(), c.committed_big.load(),
                c.rolled_back.load(), c.raised.load(), c.aborted_big.load(), c.conflicts.load(),
                c.unknown.load(), c.other_errors.load(), c.reconnects.load());
  std::string out = buf;
  out += ", \"error_samples\": {";
  bool first = true;
  for (const auto& [msg, n] : c.error_samples) {
    std::string esc;
    for (char ch : msg) {
      if (ch == '"' || ch == '\\') esc += '\\';
      if (static_cast<unsigned char>(ch) >= 0x20) esc += ch;
    }
    out += (first ? "\"" : ", \"") + esc + "\": " + std::to_string(n);
    first = false;
  }
  out += "}}\n";
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strncmp(argv[i], "--", 2) != 0) break;
    args[argv[i] + 2] = argv[i + 1];
  }
  if (args.count("dsn") == 0 || args.count("stats") == 0) {
    std::fprintf(stderr, "usage: faults_load --dsn DSN --stats FILE [--rate 150] [--threads 3] "
                         "[--seed S] [--seconds N]\n");
    return 2;
  }
  double rate = args.count("rate") ? std::atof(args["rate"].c_str()) : 150.0;
  int threads = args.count("threads") ? std::atoi(args["threads"].c_str()) : 3;
  unsigned seed = args.count("seed") ? static_cast<unsigned>(std::strtoul(args["seed"].c_str(), nullptr, 10)) : 1;
  double seconds = args.count("seconds") ? std::atof(args["seconds"].c_str()) : 0;
  if (rate <= 0 || threads <= 0) {
    std::fprintf(stderr, "faults_load: --rate and --threads must be positive\n");
    return 2;
  }

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  Counts counts;
  auto start = Clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back(Worker, args["dsn"], rate / threads, seed * 7919u + static_cast<unsigned>(t), &counts);
  }
  std::thread stopper([&] {
    int sig = 0;
    if (seconds > 0) {
      timespec ts{static_cast<time_t>(seconds), static_cast<long>((seconds - static_cast<long>(seconds)) * 1e9)};
      siginfo_t info;
      sigtimedwait(&set, &info, &ts);
    } else {
      sigwait(&set, &sig);
    }
    g_stop.store(true);
  });
  stopper.join();
  for (std::thread& w : workers) w.join();
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::string json = Json(counts, secs);
  FILE* f = std::fopen(args["stats"].c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "faults_load: cannot write %s\n", args["stats"].c_str());
    return 1;
  }
  std::fputs(json.c_str(), f);
  std::fclose(f);
  std::fputs(json.c_str(), stderr);
  return 0;
}
