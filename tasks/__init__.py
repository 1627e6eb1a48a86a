"""Pipeline stages, one module per DVC stage (a thin main over pure functions); what they share
lives in the subpackages kuaisar, table, training, evaluation, config and io."""
