"""Event notifications (S3 via SQS, watched folders) turned into arrivals."""
