# Hardening (issue 15): the libFuzzer targets and the kill -9 harness.
#
# libFuzzer targets (tests/fuzz/fuzz_*.cpp), built with -DMOESCOPE_FUZZ=ON and clang (tools/fuzz.sh does both).
# moescope_fuzz_flags() runs before the libraries are declared: every source of the build gets coverage
# instrumentation and ASan + UBSan, and FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION (io/zip then computes CRC-32s
# but does not enforce them, so that mutations reach the pickle VM). moescope_fuzz_targets() runs after: one
# executable per fuzz_*.cpp; fuzz_*_torch.cpp link moescope_core, the others moescope_base only.
option(MOESCOPE_FUZZ "Build the libFuzzer targets in tests/fuzz (clang only)" OFF)

macro(moescope_fuzz_flags)
  if(MOESCOPE_FUZZ)
    if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
      message(FATAL_ERROR "MOESCOPE_FUZZ needs clang (libFuzzer): configure with -DCMAKE_CXX_COMPILER=clang++ "
                          "-DCMAKE_C_COMPILER=clang, or run tools/fuzz.sh")
    endif()
    if(MOESCOPE_SANITIZE)
      message(FATAL_ERROR "MOESCOPE_FUZZ already builds with address and UB sanitizers: leave MOESCOPE_SANITIZE off")
    endif()
    add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                        -fno-omit-frame-pointer -g)
    add_compile_definitions(FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION)
    add_link_options(-fsanitize=address,undefined)
  endif()
endmacro()

function(moescope_fuzz_targets)
  if(NOT MOESCOPE_FUZZ)
    return()
  endif()
  file(GLOB _fuzzers CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_*.cpp)
  set(_names)
  foreach(f ${_fuzzers})
    get_filename_component(name ${f} NAME_WE)
    add_executable(${name} ${f})
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests/fuzz)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    if(name MATCHES "_torch$")
      target_link_libraries(${name} PRIVATE moescope_core)
    else()
      target_link_libraries(${name} PRIVATE moescope_base)
    endif()
    list(APPEND _names ${name})
  endforeach()
  add_custom_target(fuzzers DEPENDS ${_names})
  # The list tools/fuzz.sh runs: one name per line.
  list(JOIN _names "\n" _text)
  file(WRITE ${CMAKE_BINARY_DIR}/fuzzers.txt "${_text}\n")
endfunction()

# The kill -9 harness (tests/kill/kill_harness.py) as a ctest test: quick mode, labelled slow and kill (about two
# minutes on 2 cores); MOESCOPE_KILL_LONG=1 in the environment runs the long mode. Needs Debian's python3 with h5py
# and numpy, like the plot tests.
function(moescope_kill_test)
  if(NOT MOESCOPE_BUILD_TESTS OR MOESCOPE_FUZZ OR NOT EXISTS /usr/bin/python3)
    return()
  endif()
  execute_process(COMMAND /usr/bin/python3 -c "import h5py, numpy" RESULT_VARIABLE _deps OUTPUT_QUIET ERROR_QUIET)
  if(NOT _deps EQUAL 0)
    message(STATUS "moescope: /usr/bin/python3 lacks h5py or numpy: the kill harness is skipped")
    return()
  endif()
  add_test(NAME kill.harness COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/kill/kill_harness.py
           --moescope $<TARGET_FILE:moescope>)
  set_tests_properties(kill.harness PROPERTIES LABELS "slow;kill" TIMEOUT 1800 RUN_SERIAL TRUE)
endfunction()
