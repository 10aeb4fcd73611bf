// The dependency test-missing-dep links against and the loader cannot find.
__attribute__((visibility("default"))) int lyre_test_dep_value() { return 42; }
