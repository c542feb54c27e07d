"""What an experiment is: the spec's schema and loading, the search space, the validation
protocol, the method registry and the objective's names. Imports neither torch nor Ray."""
