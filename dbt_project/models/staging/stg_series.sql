with source as (
    select * from {{ source('raw', 'series') }}
),

renamed as (
    select
        SeriesInstanceUID as series_instance_uid,
        StudyInstanceUID as study_instance_uid,
        device_key,
        Modality as modality,
        {{ dicom_integer('SeriesNumber') }} as series_number,
        {{ dicom_date('SeriesDate') }} as series_date,
        {{ dicom_time('SeriesTime') }} as series_time,
        SeriesDescription as series_description,
        BodyPartExamined as body_part_examined,
        PatientPosition as patient_position,
        Laterality as laterality,
        ProtocolName as protocol_name,
        OperatorsName as operators_name,
        FrameOfReferenceUID as frame_of_reference_uid,
        source_key,
        batch_id,
        ingested_at
    from source
),

deduplicated as (
    select *
    from renamed
    qualify row_number() over (partition by series_instance_uid order by ingested_at desc, source_key) = 1
)

select * from deduplicated
