"""The dead-letter toolkit: a pure core (selection, faithful copies, batch packing, the requeue policy, reports,
export records) and one thin Service Bus I/O module (`bus`), driven by `digestctl dlq`."""
