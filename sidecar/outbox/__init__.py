"""The outbox: webhooks stored durably per region, drained in mailbox order by the worker."""
