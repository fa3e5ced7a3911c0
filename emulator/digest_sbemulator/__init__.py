"""A local Azure Service Bus emulator speaking AMQP 1.0 to the unmodified azure-servicebus SDK."""
