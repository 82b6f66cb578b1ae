"""Engine profiles: what each inference engine allocates for a ModelSpec and its settings."""
