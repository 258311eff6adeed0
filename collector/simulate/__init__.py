"""`collector simulate`: a deterministic Japan/US fleet of edge sites with exact ground truth.

topology.py (sites, series) + generator.py (what every sample is, from noise.py's counter-based
randomness) -> batches.py (batches, duplicates, late delivery, bytes) -> fleet.py (agents mode
through AgentPipeline, or straight into Kafka); truth.py records what a correct pipeline must
publish; agent_adapters.py lends one site to a real agent's link/cell source; pm_writer.py and
pm_files.py write its cells as 3GPP PM files. See docs/simulator.md.
"""
