# cmake -DNM=nm -DLIBRARY=libedgetune.so -DHEADER=c_api.h -P exported_symbols.cmake
# Fails unless the library's defined dynamic symbols are exactly the functions c_api.h declares.
execute_process(COMMAND ${NM} -D --defined-only ${LIBRARY} OUTPUT_VARIABLE listing RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${NM} -D --defined-only ${LIBRARY} failed (${rc})")
endif()
string(REGEX MATCHALL "[^\n]+" exported "${listing}")
list(TRANSFORM exported REPLACE "^.* " "")
list(SORT exported)

file(READ ${HEADER} header)
string(REGEX MATCHALL "EDGETUNE_API [^(]*[ *]edgetune_[a-z0-9_]+\\(" declared "${header}")
list(TRANSFORM declared REPLACE ".*[ *](edgetune_[a-z0-9_]+)\\($" "\\1")
list(SORT declared)

if(NOT exported STREQUAL declared)
  set(extra ${exported})
  list(REMOVE_ITEM extra ${declared})
  set(missing ${declared})
  list(REMOVE_ITEM missing ${exported})
  message(FATAL_ERROR "${LIBRARY}: exported symbols differ from c_api.h: not declared [${extra}], "
                      "not exported [${missing}]")
endif()
list(LENGTH exported n)
message(STATUS "${n} symbols exported, all declared in c_api.h")
