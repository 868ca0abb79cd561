// A small RAII layer over the HDF5 C API: the datasets and attributes diffode reads and writes.
// Matrices are stored row-major as HDF5 stores them (rows = samples), so h5py and pandas read the
// same layout the project holds in memory.
#pragma once

#include "core/state.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace diffode {

class Hdf5File {
 public:
  enum class Mode { read, create };
  Hdf5File(const std::filesystem::path& path, Mode mode);
  ~Hdf5File();
  Hdf5File(const Hdf5File&) = delete;
  Hdf5File& operator=(const Hdf5File&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Datasets; names may contain '/', intermediate groups are created as needed.
  void write_matrix(const std::string& name, const Batch& values);
  void write_vector(const std::string& name, const std::vector<double>& values);
  Batch read_matrix(const std::string& name) const;       // a 1-D dataset reads as one column
  std::vector<double> read_vector(const std::string& name) const;
  bool has(const std::string& name) const;

  // String and number attributes on the root ("/") or on a group or dataset.
  void write_attribute(const std::string& object, const std::string& name, const std::string& value);
  void write_attribute(const std::string& object, const std::string& name, double value);
  std::string read_string_attribute(const std::string& object, const std::string& name) const;

  void flush();

 private:
  void ensure_parent_groups(const std::string& name);
  std::filesystem::path path_;
  long long file_ = -1;  // hid_t, kept opaque so this header needs no HDF5 include
};

}  // namespace diffode
