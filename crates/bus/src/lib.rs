//! Message bus: publisher and consumer traits, RabbitMQ and in-process implementations.
