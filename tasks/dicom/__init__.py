"""Reading and decoding DICOM headers: the lean reader, DICOM JSON, instance and entity rows."""
