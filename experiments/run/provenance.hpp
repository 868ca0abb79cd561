// What every result file records about how it was made: command line, commit, library versions,
// host and start time.
#pragma once

#include <string>
#include <vector>

namespace diffode {

struct Provenance {
  std::string command_line;
  std::string commit;       // git HEAD of the source tree, "+dirty" when it had uncommitted changes
  std::string versions;     // diffode, compiler, Eigen, fmt, HDF5, toml++
  std::string host;
  std::string start_time;   // UTC, ISO 8601
};

Provenance collect_provenance(int argc, char** argv);

class Hdf5File;
// Root attributes command_line, commit, versions, host, start_time.
void write_provenance(Hdf5File& file, const Provenance& p);
// Attribute `model` of `object`: a network model's description (models/network.hpp: its file and
// SHA-256, architecture or signature, device), which the config's path alone does not pin down.
// The exact mixtures need none: the config defines them.
void write_model_provenance(Hdf5File& file, const std::string& object, const std::string& description);

}  // namespace diffode
