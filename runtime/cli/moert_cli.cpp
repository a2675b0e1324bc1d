// moert: the command-line front end (`moert info`, `moert run`; see
// commands.h for the commands and their options).
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "commands.h"

int main(int argc, char** argv) {
  try {
    return moert::cli::run_command(std::vector<std::string>(argv + 1, argv + argc), std::cout,
                                   std::cerr);
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << "moert: " << e.what() << "\n";
    return 1;
  }
}
