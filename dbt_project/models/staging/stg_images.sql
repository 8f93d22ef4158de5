with source as (
    select * from {{ source('raw', 'images') }}
),

renamed as (
    select
        SOPInstanceUID as sop_instance_uid,
        SOPClassUID as sop_class_uid,
        SeriesInstanceUID as series_instance_uid,
        StudyInstanceUID as study_instance_uid,
        {{ dicom_integer('InstanceNumber') }} as instance_number,
        ImageType as image_type,
        {{ dicom_date('ContentDate') }} as content_date,
        {{ dicom_time('ContentTime') }} as content_time,
        {{ dicom_date('AcquisitionDate') }} as acquisition_date,
        {{ dicom_time('AcquisitionTime') }} as acquisition_time,
        {{ dicom_number_list('ImagePositionPatient') }} as image_position_patient,
        {{ dicom_number_list('ImageOrientationPatient') }} as image_orientation_patient,
        {{ dicom_number_list('PixelSpacing') }} as pixel_spacing,
        {{ dicom_number('SliceThickness') }} as slice_thickness,
        {{ dicom_number('SliceLocation') }} as slice_location,
        Rows as rows,
        Columns as columns,
        coalesce({{ dicom_integer('NumberOfFrames') }}, case when has_pixel_data then 1 end) as number_of_frames,
        SamplesPerPixel as samples_per_pixel,
        PhotometricInterpretation as photometric_interpretation,
        BitsAllocated as bits_allocated,
        BitsStored as bits_stored,
        PixelRepresentation as pixel_representation,
        {{ dicom_number('RescaleIntercept') }} as rescale_intercept,
        {{ dicom_number('RescaleSlope') }} as rescale_slope,
        {{ dicom_number_list('WindowCenter') }} as window_center,
        {{ dicom_number_list('WindowWidth') }} as window_width,
        VOILUTFunction as voi_lut_function,
        LossyImageCompression as lossy_image_compression,
        TransferSyntaxUID as transfer_syntax_uid,
        has_pixel_data,
        file_size,
        content_hash,
        source_key,
        source_etag,
        batch_id,
        ingested_at
    from source
),

deduplicated as (
    select *
    from renamed
    qualify row_number() over (partition by sop_instance_uid order by ingested_at desc, source_key) = 1
)

select * from deduplicated
