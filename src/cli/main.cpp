// The diffsample command-line program: picks the subcommand (cli/commands.hpp) and turns its failures into exit
// statuses (0 success, 1 bad input or failed run, 2 bad command line). With no subcommand it runs the demo.
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>

#include <diffsample/error.hpp>

#include "cli/args.hpp"
#include "cli/commands.hpp"
#include "cli/distributed.hpp"
#include "cli/output.hpp"
#include "cli/problem.hpp"
#include "printable.hpp"

namespace {

namespace cli = diffsample::cli;

const char* usage =
    "usage: diffsample [demo] [options]      run the demo: sample with MALA on the grid mixture (default)\n"
    "       diffsample sample [options]      sample a mixture prior with any sampler, scored against exact samples\n"
    "       diffsample solve --problem FILE  posterior sampling (smc, dps, pigdm, diffpir, skrock, tmpd,\n"
    "                                        ddrm, dcps) for a problem file's prior and observation, scored against the\n"
    "                                        exact posterior (or --sampler exact)\n"
    "       diffsample bench [options]       throughput table of ULA, MALA, DDPM, DDIM and ODE-Heun\n"
    "       diffsample info                  describe the machine: executor, GPU, driver and runtime\n"
    "       diffsample version               the library's version (also diffsample --version or -V)\n"
    "       diffsample COMMAND --help        the options of a subcommand (diffsample demo --help: the demo's)\n";

int run(int argc, char** argv) {
  const char* command = argc >= 2 ? argv[1] : "";
  // Under mpirun sample (and demo) spread their chains, solve its SMC particles over the processes
  // (cli/distributed.hpp); bench and info run as one process.
  // Refused by every process alike (an agreement), as every failure after MPI has started must be.
  for (const char* alone : {"bench", "info"})
    if (std::strcmp(command, alone) == 0 && cli::distributed::launched())
      cli::distributed::agree(std::make_exception_ptr(
          cli::usage_error(std::string(alone) + " runs as one process: under mpirun only sample, demo and solve "
                                                "spread their work over the processes")));
  if (std::strcmp(command, "info") == 0) return cli::run_info(argc, argv, 2);
  if (std::strcmp(command, "version") == 0 || std::strcmp(command, "--version") == 0 || std::strcmp(command, "-V") == 0)
    return cli::run_version(argc, argv, 2);
  if (std::strcmp(command, "sample") == 0) return cli::run_sample(argc, argv, 2);
  if (std::strcmp(command, "bench") == 0) return cli::run_bench(argc, argv, 2);
  if (std::strcmp(command, "solve") == 0) return cli::run_solve(argc, argv, 2);
  if (std::strcmp(command, "--help") == 0 || std::strcmp(command, "-h") == 0) cli::print_and_exit(usage);
  // A first argument that is neither an option nor a command is a misspelt command ("smaple"), not an unknown option
  // of the demo; agreed on under mpirun as the demo's own arguments are.
  if (argc >= 2 && command[0] != '-' && std::strcmp(command, "demo") != 0)
    cli::distributed::check_arguments([&] {
      throw cli::usage_error("unknown command '" + std::string(command) +
                             "' (expected demo, sample, solve, bench, info or version; see diffsample --help)");
    });
  return cli::run_demo(argc, argv, std::strcmp(command, "demo") == 0 ? 2 : 1);
}

// Prints "diffsample: <prefix><message>" on stderr and returns the exit status. Under mpirun, a failure of this
// process alone after MPI has started (one the processes did not agree on) ends the job instead, with the message
// and the status: the other processes may be waiting for this one in a collective (cli/distributed.hpp).
// The message is one line whatever it quotes (a value from the command line, a name): control characters escaped,
// at most 16 KiB.
int failed(int status, const char* message, const char* prefix = "") {
  const std::string line = diffsample::detail::printable(std::string(prefix) + message, 16384);
  cli::distributed::end_job_if_alone(status, line);
  std::fprintf(stderr, "diffsample: %s\n", line.c_str());
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  cli::guard_stdout();
  try {
    const int status = run(argc, argv);
    cli::check_stdout();  // every subcommand: results that did not reach stdout are a failed run
    return status;
  } catch (const cli::help_request& help) {
    // A subcommand's --help (cli/args.hpp); under mpirun the process that prints it, or one that does not.
    if (help.text != nullptr) cli::print_and_exit(help.text);
    return 0;
  } catch (const cli::usage_error& e) {
    return failed(2, e.what());
  } catch (const cli::input_error& e) {
    return failed(1, e.what());
  } catch (const std::bad_alloc&) {
    return failed(1, "out of host memory (try fewer chains or samples)");
  } catch (const diffsample::error& e) {
    return failed(1, e.what());
  } catch (const std::exception& e) {
    return failed(1, e.what(), "unexpected error: ");
  }
}
