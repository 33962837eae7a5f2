# int8 GEMM micro-benchmark (include()d from bench/CMakeLists.txt, which has already found Google Benchmark).
add_executable(bertlet_bench_gemm_s8 ${CMAKE_CURRENT_LIST_DIR}/bench_gemm_s8.cpp)
target_link_libraries(bertlet_bench_gemm_s8 PRIVATE bertlet::bertlet benchmark::benchmark)
target_compile_options(bertlet_bench_gemm_s8 PRIVATE ${BERTLET_WARNINGS})
