"""`collector simulate`: a deterministic Japan/US fleet of edge sites with exact ground truth.

model.py (what every sample is) -> batches.py (batches, duplicates, late delivery, bytes)
-> fleet.py (agents mode through AgentPipeline, or straight into Kafka) ; truth.py records
what a correct pipeline must publish. See docs/simulator.md.
"""
