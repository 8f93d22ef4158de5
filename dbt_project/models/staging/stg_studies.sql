with source as (
    select * from {{ source('raw', 'studies') }}
),

renamed as (
    select
        StudyInstanceUID as study_instance_uid,
        coalesce(PatientID, '') || '^' || coalesce(IssuerOfPatientID, '') as patient_key,
        {{ dicom_date('StudyDate') }} as study_date,
        {{ dicom_time('StudyTime') }} as study_time,
        AccessionNumber as accession_number,
        StudyID as study_id,
        StudyDescription as study_description,
        ReferringPhysicianName as referring_physician_name,
        PatientAge as patient_age,
        {{ dicom_number('PatientSize') }} as patient_size_m,
        {{ dicom_number('PatientWeight') }} as patient_weight_kg,
        source_key,
        batch_id,
        ingested_at
    from source
),

deduplicated as (
    select *
    from renamed
    qualify row_number() over (partition by study_instance_uid order by ingested_at desc, source_key) = 1
)

select * from deduplicated
